//! The credit-assignment rules, their feedback scale, and the magnitude distributions.

use core::fmt;
use core::str::FromStr;

use burn::config::Config;
use burn::tensor::Distribution;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::FeedbackError;

/// How a layer sends the gradient back to its input.
///
/// For a layer `y = x·W` (or a convolution with kernel `W`) the weight gradient is always exact;
/// the rule decides which tensor `V` replaces `W` when the upstream gradient `g` is sent back to
/// the input (`dx = g·Vᵀ`, or the transposed convolution of `g` with `V`).
///
/// | rule | `V` |
/// |------|-----|
/// | [`Bp`](Self::Bp)     | `W` (backpropagation) |
/// | [`USf`](Self::USf)   | `s·sign(W)` |
/// | [`FrSf`](Self::FrSf) | `s·M∘sign(W)`, `M` drawn once per layer and fixed |
/// | [`BrSf`](Self::BrSf) | `s·M∘sign(W)`, `M` redrawn at every backward pass |
/// | [`Fa`](Self::Fa)     | `s·B`, `B` drawn once per layer and fixed |
///
/// `s` is given by [`FeedbackScale`].
///
/// ```
/// use signsym_feedback::FeedbackRule;
/// let rule: FeedbackRule = "uSF".parse().unwrap();
/// assert_eq!(rule, FeedbackRule::USf);
/// assert_eq!(rule.to_string(), "usf");
/// assert!("sf".parse::<FeedbackRule>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackRule {
    /// Backpropagation: `V = W`.
    Bp,
    /// Uniform sign-concordant feedback: `V = s·sign(W)`.
    USf,
    /// Fixed random-magnitude sign-concordant feedback: `V = s·M∘sign(W)`, `M` fixed.
    FrSf,
    /// Batchwise random-magnitude sign-concordant feedback: `V = s·M∘sign(W)`, `M` redrawn each
    /// backward pass.
    BrSf,
    /// Feedback alignment: `V = s·B`, `B` fixed random.
    Fa,
}

impl FeedbackRule {
    /// Every rule, in the order of the paper's tables.
    pub const ALL: [FeedbackRule; 5] = [Self::Bp, Self::USf, Self::FrSf, Self::BrSf, Self::Fa];

    /// The short lower-case name (`bp`, `usf`, `frsf`, `brsf`, `fa`), as accepted by `parse`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bp => "bp",
            Self::USf => "usf",
            Self::FrSf => "frsf",
            Self::BrSf => "brsf",
            Self::Fa => "fa",
        }
    }

    /// Whether the rule keeps a fixed random tensor (`M` for frSF, `B` for FA) in the layer.
    pub fn has_fixed_feedback(&self) -> bool {
        matches!(self, Self::FrSf | Self::Fa)
    }
}

impl fmt::Display for FeedbackRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeedbackRule {
    type Err = FeedbackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bp" => Ok(Self::Bp),
            "usf" => Ok(Self::USf),
            "frsf" => Ok(Self::FrSf),
            "brsf" => Ok(Self::BrSf),
            "fa" => Ok(Self::Fa),
            _ => Err(FeedbackError::UnknownRule(s.to_string())),
        }
    }
}

/// The scale `s` of the feedback tensor `V`.
///
/// `sign(W)` has entries ±1 while pre-trained weights are around 0.01–0.1, so with
/// [`Unit`](Self::Unit) every layer multiplies the backward signal by one or two orders of
/// magnitude and a 16-layer network overflows `f32`. The default, [`MatchNorm`](Self::MatchNorm),
/// rescales `V` to the Frobenius norm of `W` at every backward pass: the direction is the rule's,
/// the size is backpropagation's, so deep networks stay finite and learning rates tuned for BP
/// still fit. Sign-based rules are invariant to a positive per-layer scale up to the size of the
/// update, so this changes no sign and no direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackScale {
    /// `s = 1`: the formula as written in the papers.
    Unit,
    /// `s = sqrt(2 / (fan_in + fan_out))`, the layer's Xavier initialisation standard deviation
    /// (biotorch's choice for sign-symmetry layers).
    InitStd,
    /// `s = ‖W‖_F / ‖V₀‖_F`, where `V₀` is the unscaled feedback tensor, so that `‖V‖_F = ‖W‖_F`.
    #[default]
    MatchNorm,
}

impl fmt::Display for FeedbackScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unit => "unit",
            Self::InitStd => "init-std",
            Self::MatchNorm => "match-norm",
        })
    }
}

impl FromStr for FeedbackScale {
    type Err = FeedbackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "unit" => Ok(Self::Unit),
            "init-std" | "initstd" => Ok(Self::InitStd),
            "match-norm" | "matchnorm" => Ok(Self::MatchNorm),
            _ => Err(FeedbackError::UnknownScale(s.to_string())),
        }
    }
}

/// The distribution of the random magnitudes `M` (frSF, brSF) or of the feedback matrix `B` (FA).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackDistribution {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (exclusive).
        high: f64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (≥ 0).
        std: f64,
    },
}

impl FeedbackDistribution {
    /// The default for the magnitudes `M`: uniform on `[0, 1)`.
    pub const MAGNITUDE: Self = Self::Uniform {
        low: 0.0,
        high: 1.0,
    };
    /// The default for FA's matrix `B`: uniform on `[-1, 1)`.
    pub const SYMMETRIC: Self = Self::Uniform {
        low: -1.0,
        high: 1.0,
    };

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), FeedbackError> {
        match *self {
            Self::Uniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(FeedbackError::InvalidDistribution(format!(
                        "uniform needs finite low < high, got [{low}, {high})"
                    )));
                }
            }
            Self::Normal { mean, std } => {
                if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                    return Err(FeedbackError::InvalidDistribution(format!(
                        "normal needs a finite mean and a finite std ≥ 0, got mean {mean}, std {std}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Draws `n` values on the host from a seeded ChaCha8 generator: the same seed gives the same
    /// values on every platform.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>, FeedbackError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values = match *self {
            Self::Uniform { low, high } => {
                let dist = Uniform::new(low, high)
                    .map_err(|e| FeedbackError::InvalidDistribution(e.to_string()))?;
                (0..n).map(|_| dist.sample(&mut rng) as f32).collect()
            }
            Self::Normal { mean, std } => {
                let dist = Normal::new(mean, std)
                    .map_err(|e| FeedbackError::InvalidDistribution(e.to_string()))?;
                (0..n).map(|_| dist.sample(&mut rng) as f32).collect()
            }
        };
        Ok(values)
    }

    /// The same distribution as burn's on-device sampler sees it.
    pub fn to_burn(&self) -> Distribution {
        match *self {
            Self::Uniform { low, high } => Distribution::Uniform(low, high),
            Self::Normal { mean, std } => Distribution::Normal(mean, std),
        }
    }
}

/// Derives a layer's own seed from a model seed and the layer's path (`"features.3"`), so that
/// every layer of a model draws different fixed matrices, reproducibly.
pub fn layer_seed(seed: u64, path: &str) -> u64 {
    // FNV-1a over the path, then a splitmix64 finaliser over the mix with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(seed ^ h)
}

/// SplitMix64's output function: a well-mixed 64-bit value from `z` (after adding the golden
/// ratio increment). The project's seed derivations (layer seeds, attack step seeds) go through
/// it, so neighbouring inputs give unrelated streams.
///
/// ```
/// use signsym_feedback::splitmix64;
/// assert_ne!(splitmix64(1), splitmix64(2));
/// assert_eq!(splitmix64(7), splitmix64(7));
/// ```
pub fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything that defines a layer's backward rule, shared by all feedback layer configs.
///
/// ```
/// use signsym_feedback::{FeedbackConfig, FeedbackRule, FeedbackScale};
/// let config = FeedbackConfig::new().with_rule(FeedbackRule::FrSf).with_seed(7);
/// assert_eq!(config.scale, FeedbackScale::MatchNorm);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct FeedbackConfig {
    /// The rule.
    #[config(default = "FeedbackRule::Bp")]
    pub rule: FeedbackRule,
    /// The scale of `V`.
    #[config(default = "FeedbackScale::MatchNorm")]
    pub scale: FeedbackScale,
    /// Distribution of the magnitudes `M` of frSF and brSF.
    #[config(default = "FeedbackDistribution::MAGNITUDE")]
    pub magnitude: FeedbackDistribution,
    /// Distribution of FA's matrix `B`.
    #[config(default = "FeedbackDistribution::SYMMETRIC")]
    pub fixed: FeedbackDistribution,
    /// Seed of the layer's fixed random tensor.
    #[config(default = 0)]
    pub seed: u64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedbackConfig {
    /// Checks the distributions.
    pub fn validate(&self) -> Result<(), FeedbackError> {
        self.magnitude.validate()?;
        self.fixed.validate()
    }
}
