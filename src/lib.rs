#![doc = include_str!("../README.md")]
//! signsym: fine-tuning with sign-symmetry and feedback-alignment rules on Burn, and honest
//! evaluation of the robustness they seem to give.
//!
//! The member crates are re-exported: [`feedback`] (the rules, as layers and tensor ops),
//! [`models`] (backbones, heads, torchvision weights, fine-tuning), [`attacks`] (white-box and
//! decision-based attacks with a choice of gradient source), [`losses`], [`metrics`] and
//! [`data`] (dataset readers). [`digits`] is the quick-start study the README runs.

#![warn(missing_docs)]

pub use signsym_attacks as attacks;
pub use signsym_data as data;
pub use signsym_feedback as feedback;
pub use signsym_local as local;
pub use signsym_losses as losses;
pub use signsym_metrics as metrics;
pub use signsym_models as models;

pub mod digits;
#[cfg(feature = "study")]
pub mod study;
