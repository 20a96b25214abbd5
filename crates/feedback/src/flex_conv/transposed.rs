//! 2-d transposed convolutions on Flex through the convolution kernels of this module.
//!
//! `conv_transpose(x, W)` is the input gradient of the convolution `conv(·, W)` whose output
//! gradient is `x`; its input gradient is that convolution's forward of the output gradient `g`,
//! and its weight gradient that convolution's weight gradient with `x` and `g` swapped. The
//! weight `[in, out/groups, k₁, k₂]` of the transposed convolution reads as the convolution's
//! `[out, in/groups, k₁, k₂]` unchanged, so nothing is copied. Flex's own kernels (and burn's
//! generic backward) are what the extension's convolution kernels replaced for `conv2d`.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ConvTransposeOptions};

use super::{
    add_channel_bias, conv2d_forward, conv2d_weight_backward, conv2d_x_backward, dims4, output_size,
};

/// The convolution whose input gradient the transposed convolution is.
fn as_conv(options: &ConvTransposeOptions<2>) -> ConvOptions<2> {
    ConvOptions::new(
        options.stride,
        options.padding,
        options.dilation,
        options.groups,
    )
}

/// The output `[batch, out, h, w]` of a transposed convolution of `x` (`[batch, in, h₀, w₀]`)
/// with `w` (`[in, out/groups, k₁, k₂]`), as burn defines it: `(h₀ − 1)·stride − 2·padding +
/// dilation·(k₁ − 1) + padding_out + 1`. `None` where the convolution over that output would
/// not give back `h₀ × w₀` positions (burn's kernel then runs).
fn output_dims(
    x: [usize; 4],
    w: [usize; 4],
    options: &ConvTransposeOptions<2>,
) -> Option<[usize; 4]> {
    let conv = as_conv(options);
    let mut out = [x[0], w[1].checked_mul(options.groups.max(1))?, 0, 0];
    for a in 0..2 {
        let grown = (x[2 + a].checked_sub(1)?)
            .checked_mul(options.stride[a])?
            .checked_add(options.dilation[a].checked_mul(w[2 + a].checked_sub(1)?)?)?
            .checked_add(options.padding_out[a] + 1)?;
        out[2 + a] = grown.checked_sub(2 * options.padding[a])?;
        (output_size(out[2 + a], w[2 + a], &conv, a)? == x[2 + a]).then_some(())?;
    }
    Some(out)
}

/// `conv_transpose2d(x, w) + bias`: the convolution input-gradient kernel with `x` as the output
/// gradient, then the bias per output channel.
pub(crate) fn forward(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvTransposeOptions<2>,
) -> Option<FlexTensor> {
    let out = output_dims(dims4(x)?, dims4(w)?, options)?;
    let bias = match bias {
        Some(b) => Some(b.as_slice::<f32>().filter(|b| b.len() == out[1])?),
        None => None,
    };
    let mut y = conv2d_x_backward(out, w, x, &as_conv(options))?;
    if let Some(bias) = bias {
        add_channel_bias(y.storage_mut::<f32>(), bias, out[2] * out[3]);
    }
    Some(y)
}

/// The input gradient of a transposed convolution with kernel `v` (`W` or a feedback tensor):
/// the convolution's forward of the output gradient, as burn's generic one computes it.
pub(crate) fn x_backward(
    v: &FlexTensor,
    grad: &FlexTensor,
    options: &ConvTransposeOptions<2>,
) -> Option<FlexTensor> {
    conv2d_forward(grad, v, None, &as_conv(options))
}

/// The weight gradient `[in, out/groups, k₁, k₂]` of a transposed convolution of `x` whose
/// output gradient is `grad`.
pub(crate) fn weight_backward(
    x: &FlexTensor,
    weight_dims: [usize; 4],
    grad: &FlexTensor,
    options: &ConvTransposeOptions<2>,
) -> Option<FlexTensor> {
    conv2d_weight_backward(grad, weight_dims, x, &as_conv(options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::TensorMetadata;
    use burn::backend::flex::Flex;
    use burn::backend::ops::ModuleOps;
    use burn::tensor::TensorData;

    fn tensor(dims: [usize; 4], salt: usize) -> FlexTensor {
        let n = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5 - 1.0)
            .collect();
        FlexTensor::from_data(TensorData::new(values, dims))
    }

    fn assert_close(what: &str, got: &FlexTensor, want: FlexTensor) {
        assert_eq!(got.shape(), want.shape(), "{what}: shapes");
        let (a, b) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= 1e-5 * scale, "{what}: error {err} (scale {scale})");
    }

    /// burn's output size, padding_out included; `None` where the convolution over it would not
    /// give the input's size back (output padding as large as the stride).
    #[test]
    fn output_dims_follow_burns_formula() {
        let o = ConvTransposeOptions::new([2, 3], [1, 0], [1, 2], [1, 2], 2);
        // (5 − 1)·2 − 2 + 1·2 + 1 + 1 = 10; (4 − 1)·3 − 0 + 2·1 + 2 + 1 = 14.
        assert_eq!(
            output_dims([3, 4, 5, 4], [4, 3, 3, 2], &o),
            Some([3, 6, 10, 14])
        );
        let too_much = ConvTransposeOptions::new([1, 1], [0, 0], [1, 0], [2, 1], 1);
        assert_eq!(output_dims([1, 2, 4, 4], [2, 2, 3, 3], &too_much), None);
    }

    /// The kernels run (no fallback) and equal Flex's own on a case with everything: stride,
    /// padding, output padding, dilation, groups and a bias.
    #[test]
    fn the_kernels_equal_flexs_own() {
        let o = ConvTransposeOptions::new([2, 2], [1, 0], [1, 0], [1, 2], 2);
        let (x, w) = (tensor([3, 4, 5, 6], 1), tensor([4, 3, 3, 2], 2));
        let bias = FlexTensor::from_data(TensorData::new(
            vec![0.5f32, -0.25, 1.0, 0.0, 2.0, -1.0],
            [6],
        ));
        let y = forward(&x, &w, Some(&bias), &o).expect("the extension's forward runs");
        let want = <Flex as ModuleOps<Flex>>::conv_transpose2d(
            x.clone(),
            w.clone(),
            Some(bias),
            o.clone(),
        );
        assert_close("forward", &y, want);
        let g = tensor(dims4(&y).unwrap(), 3);
        let dx = x_backward(&w, &g, &o).expect("the extension's input gradient runs");
        let want =
            <Flex as ModuleOps<Flex>>::conv_transpose2d_x_backward(w.clone(), g.clone(), o.clone());
        assert_close("dx", &dx, want);
        let dw = weight_backward(&x, [4, 3, 3, 2], &g, &o).expect("the weight gradient runs");
        let want = <Flex as ModuleOps<Flex>>::conv_transpose2d_weight_backward(x, w, g, o);
        assert_close("dW", &dw, want);
    }
}
