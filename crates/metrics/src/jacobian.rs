//! Frobenius norm of the Jacobian of a layer's output with respect to the input.
//!
//! A small ‖∂f/∂x‖_F means small perturbations of the input move the representation little;
//! arXiv 2405.00679 uses it to compare learning rules. The estimate uses random projections:
//! for `v ~ N(0, I)`, `E‖Jᵀv‖² = tr(J Jᵀ) = ‖J‖_F²`, and `Jᵀv` is one backward pass.
//! Gradients are exact (BP) whatever the model's feedback rule: the Jacobian belongs to the
//! forward function, not to the training rule.

use burn::config::Config;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, check_finite, check_len, invalid};

/// Settings of [`jacobian_frobenius`].
#[derive(Config, Debug)]
pub struct JacobianConfig {
    /// Random projections averaged (the relative standard error falls as 1/√projections).
    #[config(default = 32)]
    pub projections: usize,
    /// Seed of the projection vectors.
    #[config(default = 0)]
    pub seed: u64,
}

/// Per-sample Jacobian Frobenius norms of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JacobianNorm {
    /// ‖∂f(x_i)/∂x_i‖_F for each sample.
    pub per_sample: Vec<f64>,
    /// Mean over the batch.
    pub mean: f64,
}

impl JacobianNorm {
    fn from_squares(squares: Vec<f64>) -> Self {
        let per_sample: Vec<f64> = squares.into_iter().map(f64::sqrt).collect();
        let mean = per_sample.iter().sum::<f64>() / per_sample.len() as f64;
        Self { per_sample, mean }
    }
}

/// Squared norms of `Jᵀ v` per sample, one backward pass.
fn projected_squares<const D: usize, const O: usize>(
    x: &Tensor<D>,
    f: &impl Fn(Tensor<D>) -> Tensor<O>,
    projection: impl FnOnce(&[usize]) -> Vec<f32>,
) -> Result<Vec<f64>, MetricsError> {
    let batch = x.dims()[0];
    let xg = x.clone().detach().require_grad();
    let out = signsym_feedback::exact_gradients(|| f(xg.clone()));
    let dims = out.dims();
    check_len("output batch", batch, dims[0])?;
    let v = projection(&dims);
    let v = Tensor::<O>::from_data(TensorData::new(v, dims), &out.device());
    let grads = (out * v).sum().backward();
    let Some(g) = xg.grad(&grads) else {
        return Ok(vec![0.0; batch]);
    };
    let per = g.dims()[1..].iter().product::<usize>();
    let squares = g.powi_scalar(2).reshape([batch, per]).sum_dim(1);
    Ok(squares
        .try_to_vec_as::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

fn check_input<const D: usize>(x: &Tensor<D>) -> Result<(), MetricsError> {
    if x.dims()[0] == 0 {
        return Err(MetricsError::Empty("input batch"));
    }
    check_finite("input", &x.clone().detach().try_to_vec_as::<f32>()?)
}

/// Estimates ‖∂f(x_i)/∂x_i‖_F per sample by random projections.
///
/// `x` must live on an autodiff device and `f` must treat samples independently (eval mode:
/// no batch statistics), so one backward of `Σ f(x)·v` yields every sample's `J_iᵀ v_i`.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_metrics::{JacobianConfig, jacobian_frobenius};
/// let device = Device::flex().autodiff();
/// let x = Tensor::<2>::ones([2, 3], &device);
/// // f(x) = 2x has J = 2I (3×3), ‖J‖_F = 2√3.
/// let norm = jacobian_frobenius(x, |x| x * 2.0, &JacobianConfig::new().with_projections(400))?;
/// assert!((norm.mean - 2.0 * 3f64.sqrt()).abs() < 0.4);
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
pub fn jacobian_frobenius<const D: usize, const O: usize>(
    x: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<O>,
    config: &JacobianConfig,
) -> Result<JacobianNorm, MetricsError> {
    if config.projections == 0 {
        return Err(invalid("projections", 0, "must be at least 1"));
    }
    check_input(&x)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut total = vec![0.0f64; x.dims()[0]];
    for _ in 0..config.projections {
        let squares = projected_squares(&x, &f, |dims| {
            let n = dims.iter().product::<usize>();
            (0..n)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect::<Vec<f32>>()
        })?;
        for (t, s) in total.iter_mut().zip(squares) {
            *t += s;
        }
    }
    let projections = config.projections as f64;
    Ok(JacobianNorm::from_squares(
        total.into_iter().map(|t| t / projections).collect(),
    ))
}

/// The exact ‖∂f(x_i)/∂x_i‖_F per sample: one backward pass per output unit of a sample, so
/// only for small outputs (a head, a probe), or to check [`jacobian_frobenius`].
pub fn jacobian_frobenius_exact<const D: usize, const O: usize>(
    x: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<O>,
) -> Result<JacobianNorm, MetricsError> {
    check_input(&x)?;
    let batch = x.dims()[0];
    // The number of output units per sample, from one forward pass.
    let units = f(x.clone().detach()).dims()[1..].iter().product::<usize>();
    let mut total = vec![0.0f64; batch];
    for unit in 0..units {
        let squares = projected_squares(&x, &f, |dims| {
            let per = dims[1..].iter().product::<usize>();
            let mut v = vec![0.0f32; dims.iter().product()];
            for b in 0..dims[0] {
                v[b * per + unit] = 1.0;
            }
            v
        })?;
        for (t, s) in total.iter_mut().zip(squares) {
            *t += s;
        }
    }
    Ok(JacobianNorm::from_squares(total))
}
