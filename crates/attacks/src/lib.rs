#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod apgd;
mod autoattack;
mod boundary;
mod bounds;
mod decision;
mod diagnostics;
mod error;
mod evaluate;
mod hag;
mod hop_skip_jump;
mod model;
mod pgd;
mod report;
mod retrieval;
mod sdha;
mod source;
mod square;
mod training;

pub use apgd::{
    Apgd, ApgdConfig, ApgdLoss, ApgdTrace, apgd_checkpoints, dlr_loss, targeted_dlr_loss,
};
pub use autoattack::{
    AutoAttack, AutoAttackConfig, AutoAttackReport, AutoAttackVersion, SanityFlag, StageReport,
};
pub use boundary::{BoundaryAttack, BoundaryAttackConfig};
pub use bounds::{InputBox, Norm};
pub use decision::{Criterion, MinimizationAttack, MinimizationOutput};
pub use diagnostics::gradient_alignment;
pub use error::AttackError;
pub use evaluate::{
    map_curve, min_norm_per_sample, robust_accuracy, robust_ap_per_query, robust_map,
    robust_per_sample,
};
pub use hag::{Hag, HagConfig};
pub use hop_skip_jump::{HopSkipJump, HopSkipJumpConfig};
pub use model::{AttackModel, FnModel, attack_mode, predict};
pub use pgd::{
    AttackOutput, BoundedAttack, Fgsm, PAPER_EPSILONS, Pgd, PgdConfig, StepSize, cross_entropy_sum,
};
pub use report::{
    CurveWarning, EntryReport, ObfuscationFlag, RobustnessReport, RobustnessSuite,
    WORST_CASE_REFERENCE, curve_warnings, entry_label, merge_entries, obfuscation_flags,
    worst_case_flags,
};
pub use retrieval::{
    AlphaSchedule, HashDatabase, Optimizer, RetrievalAttack, RetrievalAttackOutput,
};
pub use sdha::{Sdha, SdhaConfig};
pub use signsym_feedback::GradientAlignment;
pub use source::{GradientSource, SourceKind};
pub use square::{Square, SquareConfig};
pub use training::{ADVERSARIAL_LOGITS, AdversarialForm, AdversarialTerm, SymmetryTerm};
