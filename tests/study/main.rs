//! Integration tests of the study pipeline (the main job, the paper examples, the training
//! experiments), one binary.

mod experiments;
mod local_learning;
mod paper_examples;
mod robust_finetune;

/// The studies seed the process-wide device generator (model initialisation draws from it):
/// tests take turns so that the same seed gives the same numbers whatever runs beside them.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
