//! Integration tests of the models, one binary (one link) for all of them.

mod adam;
mod fuzz;
mod terms;
mod torchvision;
mod training;
mod transfer;

/// Model initialisation, dropout and brSF draw from the process-wide device generator: tests
/// that seed it take turns, so the same seed gives the same numbers whatever runs beside them.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
