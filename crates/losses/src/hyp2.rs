//! HyP² (Xu et al., ACM MM 2022): hypersphere proxies plus a pairwise term, for multi-label
//! deep hashing.
//!
//! With `h` a sample's continuous code, `p_c` the learnable proxy of class c, cosines
//! `s_c = cos(h, p_c)` and threshold ζ:
//!
//! ```text
//! L = mean_{(i,c): y_ic = 1} (1 − s_ic)                     positive proxies
//!   + mean_{(i,c): y_ic = 0} relu(s_ic − ζ)                 negative proxies
//!   + β · mean_{(i,j): y_i·y_j = 0} relu(cos(h_i, h_j) − ζ) pairs with disjoint labels
//! ```
//!
//! The means run over all qualifying entries of the batch, as in the official code. The
//! pairwise term there only looks at samples with more than one label
//! ([`PairSelection::MultiLabelOnly`], the default); on single-label data it then vanishes and
//! HyP² reduces to its proxy terms. [`PairSelection::AllLabelled`] uses every labelled sample.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::TaskLoss;
use crate::error::{LossError, check_len, invalid};

/// Which samples of a batch enter HyP²'s pairwise term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairSelection {
    /// Samples with more than one label (the official code).
    #[default]
    MultiLabelOnly,
    /// Every sample with at least one label (gives single-label data a pairwise term too).
    AllLabelled,
}

/// Settings of [`HyP2`].
#[derive(Config, Debug)]
pub struct HyP2Config {
    /// Number of classes (proxies).
    pub num_classes: usize,
    /// Code length k.
    #[config(default = 32)]
    pub bits: usize,
    /// Weight β of the pairwise term.
    #[config(default = 0.5)]
    pub beta: f64,
    /// Threshold ζ on cosines; `None` takes it from [`code_table_threshold`].
    pub threshold: Option<f64>,
    /// Which samples enter the pairwise term.
    #[config(default = "PairSelection::MultiLabelOnly")]
    pub pairs: PairSelection,
    /// Seed of the proxies' initialisation.
    #[config(default = 0)]
    pub seed: u64,
}

/// Threshold and weights of a [`HyP2`] loss (not trained).
#[derive(Clone, Debug)]
pub struct HyP2Settings {
    /// ζ.
    pub threshold: f64,
    /// β.
    pub beta: f64,
    /// Pairwise-term selection.
    pub pairs: PairSelection,
}

/// The HyP² loss with its learnable class proxies (train them with the hashing head).
#[derive(Module, Debug)]
pub struct HyP2 {
    /// Class proxies, `[num_classes, bits]`.
    pub proxies: Param<Tensor<2>>,
    #[module(skip)]
    settings: HyP2Settings,
}

impl HyP2Config {
    /// Builds the loss. Proxies start as the official code's `kaiming_normal_(mode='fan_out')`
    /// on a `[classes, bits]` tensor, i.e. `N(0, 2/classes)`, drawn from `seed`.
    pub fn init(&self, device: &Device) -> Result<HyP2, LossError> {
        if self.num_classes == 0 {
            return Err(invalid("num_classes", 0, "must be at least 1"));
        }
        if self.bits == 0 {
            return Err(invalid("bits", 0, "must be at least 1"));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(invalid(
                "beta",
                self.beta,
                "must be finite and non-negative",
            ));
        }
        let threshold = match self.threshold {
            Some(t) if t.is_finite() && (-1.0..=1.0).contains(&t) => t,
            Some(t) => return Err(invalid("threshold", t, "must lie in [-1, 1]")),
            None => code_table_threshold(self.bits, self.num_classes).ok_or(
                LossError::UnknownThreshold {
                    bits: self.bits,
                    classes: self.num_classes,
                    log2: ceil_log2(self.num_classes),
                },
            )?,
        };
        let std = (2.0 / self.num_classes as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let values: Vec<f32> = (0..self.num_classes * self.bits)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (std * z) as f32
            })
            .collect();
        let proxies = Tensor::<2>::from_data(
            TensorData::new(values, [self.num_classes, self.bits]),
            device,
        );
        Ok(HyP2 {
            proxies: Param::from_tensor(proxies),
            settings: HyP2Settings {
                threshold,
                beta: self.beta,
                pairs: self.pairs,
            },
        })
    }
}

fn ceil_log2(n: usize) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// Rows scaled to unit length (rows of norm below 1e-12 are divided by 1e-12, as
/// `torch.nn.functional.normalize` does).
fn normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The largest number of binary codewords of length `n` with pairwise distance at least `d`,
/// where the Plotkin bound decides it (`2d ≥ n`); `None` elsewhere.
///
/// For even d, `A(n, d) = 2⌊d/(2d − n)⌋` when `2d > n` and `A(2d, d) = 4d` (Plotkin's bound,
/// attained by Levenshtein's Hadamard-matrix codes); for odd d, `A(n, d) = A(n + 1, d + 1)`.
pub fn plotkin_code_size(n: usize, d: usize) -> Option<usize> {
    if d == 0 || d > n {
        return None;
    }
    let (n, d) = if d % 2 == 1 { (n + 1, d + 1) } else { (n, d) };
    if 2 * d > n {
        Some(2 * (d / (2 * d - n)))
    } else if 2 * d == n {
        Some(4 * d)
    } else {
        None
    }
}

/// HyP²'s threshold ζ for `bits`-bit codes and `classes` classes: `1 − 2d/bits`, with d the
/// largest minimum Hamming distance a code of `2^⌈log₂ classes⌉` words of `bits` bits can have,
/// i.e. the cosine between the closest two of the best-spread binary proxies.
///
/// The official code reads ζ from a spreadsheet indexed by (bits, ⌈log₂ classes⌉); this
/// function computes the same coding-theory quantity where the Plotkin bound makes it exact
/// (for example 32 bits with up to 64 classes: ζ = 0; 64 bits with up to 128 classes: ζ = 0)
/// and returns `None` where it is not known in closed form, where ζ must be set by hand.
///
/// ```
/// use signsym_losses::code_table_threshold;
/// assert_eq!(code_table_threshold(32, 10), Some(0.0));   // CIFAR-10, 32 bits
/// assert_eq!(code_table_threshold(32, 21), Some(0.0));   // NUS-WIDE, 32 bits
/// assert_eq!(code_table_threshold(16, 4), Some(-0.25));  // 4 words of 16 bits: d = 10
/// assert_eq!(code_table_threshold(32, 80), None);        // MS-COCO, 32 bits: set ζ yourself
/// ```
pub fn code_table_threshold(bits: usize, classes: usize) -> Option<f64> {
    if bits == 0 || classes < 2 {
        return None;
    }
    let words = 1usize.checked_shl(ceil_log2(classes))?;
    for d in (1..=bits).rev() {
        match plotkin_code_size(bits, d) {
            Some(size) if size >= words => return Some(1.0 - 2.0 * d as f64 / bits as f64),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

impl HyP2 {
    /// The settings in use (ζ, β, pair selection).
    pub fn settings(&self) -> &HyP2Settings {
        &self.settings
    }

    /// HyP² of continuous codes `[batch, bits]` against multi-hot labels `[batch, classes]`
    /// (0/1 floats).
    pub fn forward(&self, codes: Tensor<2>, labels: Tensor<2>) -> Result<Tensor<1>, LossError> {
        let [classes, bits] = self.proxies.dims();
        let [batch, code_bits] = codes.dims();
        if batch == 0 {
            return Err(LossError::Empty("empty batch"));
        }
        check_len("code bits", bits, code_bits)?;
        check_len("label batch", batch, labels.dims()[0])?;
        check_len("label classes", classes, labels.dims()[1])?;
        let host = labels.try_to_vec_as::<f32>()?;
        if let Some((index, &value)) = host
            .iter()
            .enumerate()
            .find(|(_, v)| **v != 0.0 && **v != 1.0)
        {
            return Err(LossError::NotMultiHot { index, value });
        }
        let zeta = self.settings.threshold;
        let device = codes.device();
        let h = normalize_rows(codes);
        let p = normalize_rows(self.proxies.val());
        let cos = h.clone().matmul(p.transpose());

        // Labels per sample: their sum is the positive count, and they pick the pairwise rows.
        let counts: Vec<usize> = host
            .chunks_exact(classes)
            .map(|row| row.iter().filter(|v| **v == 1.0).count())
            .collect();
        let positives: usize = counts.iter().sum();
        let negatives = host.len() - positives;
        let mut loss = Tensor::<1>::zeros([1], &device);
        if positives > 0 {
            let term = (cos.clone().neg() + 1.0) * labels.clone();
            loss = loss + term.sum() / positives as f64;
        }
        if negatives > 0 {
            let term = (cos - zeta).clamp_min(0.0) * (labels.neg() + 1.0);
            loss = loss + term.sum() / negatives as f64;
        }

        if self.settings.beta > 0.0 {
            let min_labels = match self.settings.pairs {
                PairSelection::MultiLabelOnly => 2,
                PairSelection::AllLabelled => 1,
            };
            let chosen: Vec<usize> = (0..batch).filter(|&i| counts[i] >= min_labels).collect();
            let rows = |i: usize| &host[i * classes..(i + 1) * classes];
            let mut mask = vec![0.0f32; chosen.len() * chosen.len()];
            let mut disjoint = 0usize;
            for (a, &i) in chosen.iter().enumerate() {
                for (b, &j) in chosen.iter().enumerate() {
                    let shared = rows(i)
                        .iter()
                        .zip(rows(j))
                        .any(|(x, y)| *x == 1.0 && *y == 1.0);
                    if !shared {
                        mask[a * chosen.len() + b] = 1.0;
                        disjoint += 1;
                    }
                }
            }
            if disjoint > 0 {
                let n = chosen.len();
                let index = Tensor::<1, burn::tensor::Int>::from_data(
                    TensorData::new(chosen.iter().map(|&i| i as i64).collect::<Vec<_>>(), [n]),
                    &device,
                );
                let hs = h.select(0, index);
                let sim = hs.clone().matmul(hs.transpose());
                let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, n]), &device);
                let term = (sim - zeta).clamp_min(0.0) * mask;
                loss = loss + term.sum() * (self.settings.beta / disjoint as f64);
            }
        }
        Ok(loss)
    }
}

impl TaskLoss for HyP2 {
    type Target = Tensor<2>;

    fn loss(&self, codes: Tensor<2>, labels: Tensor<2>) -> Result<Tensor<1>, LossError> {
        self.forward(codes, labels)
    }
}
