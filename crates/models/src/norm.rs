//! The backbones' batch norm: burn's `BatchNorm` module and behaviour, run through the feedback
//! extension's batch-norm ops (one pass per statistic and per output on Flex instead of burn's
//! generic elementwise ops; the same numbers to rounding).

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use signsym_feedback::ops::{batch_norm_train, channel_affine};

/// `bn.forward(x)`: batch statistics (and the running statistics updated as burn does) on an
/// autodiff device while the layer's `training` flag is on, the running statistics otherwise.
/// Falls back to burn's module where the ops do not apply (an empty batch, another channel
/// count, an inference forward whose γ or β records gradients).
pub(crate) fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let [channels] = bn.gamma.dims();
    let fits = D >= 2 && dims[1] == channels && dims.iter().product::<usize>() > 0;
    if !fits {
        return bn.forward(x);
    }
    let device = x.device();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    if device.is_autodiff() && bn.training.is_enabled() {
        let Ok(result) = batch_norm_train(x.clone(), gamma, beta, bn.epsilon) else {
            return bn.forward(x);
        };
        // burn's `BatchNorm::forward_train`: an exponential average with the batch's biased
        // variance.
        let momentum = bn.momentum;
        let running_mean = bn.running_mean.value_sync().to_device(&device);
        let running_var = bn.running_var.value_sync().to_device(&device);
        let running_mean = running_mean
            .mul_scalar(1.0 - momentum)
            .add(result.mean.detach().mul_scalar(momentum));
        let running_var = running_var
            .mul_scalar(1.0 - momentum)
            .add(result.variance.detach().mul_scalar(momentum));
        bn.running_mean.update(running_mean.detach());
        bn.running_var.update(running_var.detach());
        return result.output;
    }
    if gamma.is_require_grad() || beta.is_require_grad() {
        return bn.forward(x);
    }
    let mean = bn.running_mean.value().to_device(&device);
    let variance = bn.running_var.value().to_device(&device);
    let scale = gamma.div(variance.add_scalar(bn.epsilon).sqrt());
    let shift = beta.sub(mean.mul(scale.clone()));
    match channel_affine(x.clone(), scale, Some(shift)) {
        Ok(y) => y,
        Err(_) => bn.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Two layers with the same non-trivial parameters and running statistics.
    fn twins(device: &Device) -> (BatchNorm, BatchNorm) {
        let mut bn = BatchNormConfig::new(6).with_momentum(0.3).init(device);
        bn.gamma = bn
            .gamma
            .map(|g| g.random_like(Distribution::Uniform(0.5, 1.5)));
        bn.beta = bn
            .beta
            .map(|b| b.random_like(Distribution::Uniform(-1.0, 1.0)));
        bn.running_mean = burn::module::RunningState::new(Tensor::random(
            [6],
            Distribution::Uniform(-1.0, 1.0),
            device,
        ));
        bn.running_var = burn::module::RunningState::new(Tensor::random(
            [6],
            Distribution::Uniform(0.5, 2.0),
            device,
        ));
        // A deep copy: running states are shared between clones.
        let record = bn.clone().into_record();
        let twin = BatchNormConfig::new(6)
            .with_momentum(0.3)
            .init(device)
            .load_record(record);
        (bn, twin)
    }

    #[test]
    fn batch_norm_behaves_as_burns_module_in_both_modes() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (ours, burns) = twins(&device);
        // Training mode: output, input gradient, and the running statistics after two steps.
        for step in 0..2 {
            let x = Tensor::<4>::random([5, 6, 4, 3], Distribution::Normal(1.0, 2.0), &device);
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let (ya, yb) = (batch_norm(&ours, xa.clone()), burns.forward(xb.clone()));
            assert!(
                max_diff(&host(ya.clone()), &host(yb.clone())) < 1e-4,
                "step {step}"
            );
            let (ga, gb) = (
                xa.grad(&ya.powi_scalar(2).sum().backward()).unwrap(),
                xb.grad(&yb.powi_scalar(2).sum().backward()).unwrap(),
            );
            let (ga, gb) = (Tensor::<4>::from_inner(ga), Tensor::<4>::from_inner(gb));
            assert!(max_diff(&host(ga), &host(gb)) < 1e-3, "step {step}: dx");
        }
        let stats = |bn: &BatchNorm| {
            let mut v = host(bn.running_mean.value_sync());
            v.extend(host(bn.running_var.value_sync()));
            v
        };
        let (a, b) = (stats(&ours), stats(&burns));
        assert!(
            max_diff(&a, &b) < 1e-5,
            "running statistics {a:?} against {b:?}"
        );
        // Untouched before: the update moved them.
        assert!(a.iter().any(|v| v.abs() > 1e-3));

        // Inference mode, untracked parameters (an attack's model), on autodiff and plain.
        let frozen = |bn: &BatchNorm| crate::eval_mode(bn.clone()).no_grad();
        let (ours_eval, burns_eval) = (frozen(&ours), frozen(&burns));
        let x = Tensor::<4>::random([3, 6, 5, 5], Distribution::Normal(0.0, 3.0), &device)
            .require_grad();
        let (ya, yb) = (
            batch_norm(&ours_eval, x.clone()),
            burns_eval.forward(x.clone()),
        );
        assert!(max_diff(&host(ya.clone()), &host(yb.clone())) < 1e-4);
        let ga = Tensor::<4>::from_inner(x.grad(&ya.sum().backward()).unwrap());
        let gb = Tensor::<4>::from_inner(x.grad(&yb.sum().backward()).unwrap());
        assert!(max_diff(&host(ga), &host(gb)) < 1e-5, "inference dx");
        let plain = x.inner();
        let (ya, yb) = (
            batch_norm(&ours_eval.valid(), plain.clone()),
            burns_eval.valid().forward(plain),
        );
        assert!(max_diff(&host(ya), &host(yb)) < 1e-4);
        // The statistics did not move in inference mode.
        assert_eq!(stats(&ours_eval), a);
    }
}
