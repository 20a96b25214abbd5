//! The backbones' max pooling: burn's `MaxPool2d` settings, run through the feedback
//! extension's pooling op (the same numbers, a direct kernel on Flex).

use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

/// `pool.forward(x)`, through [`signsym_feedback::ops::max_pool2d`] when its settings are the
/// op's (symmetric or no padding, dilation 1, floor mode), else burn's module itself.
pub(crate) fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match pool.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    };
    match padding {
        Some(padding) if pool.dilation == [1, 1] && !pool.ceil_mode => {
            signsym_feedback::ops::max_pool2d(x, pool.kernel_size, pool.stride, padding)
        }
        _ => pool.forward(x),
    }
}
