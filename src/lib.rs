//! signsym: sign-symmetry fine-tuning for Burn.
pub use signsym_data as data;
pub use signsym_feedback as feedback;
