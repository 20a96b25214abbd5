//! A scoped switch to exact backpropagation, whatever rule the layers were given.

use std::cell::Cell;
use std::thread::LocalKey;

thread_local! {
    static EXACT_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// A thread's nesting depth of one kind of scope (this one, [`frozen_weights`](crate::frozen_weights)).
pub(crate) type Depth = LocalKey<Cell<usize>>;

/// Enters a scope of kind `depth` on this thread.
pub(crate) fn enter(depth: &'static Depth) {
    depth.with(|d| d.set(d.get() + 1));
}

/// Leaves a scope of kind `depth`; the depth left (0: the outermost scope ended).
pub(crate) fn leave(depth: &'static Depth) -> usize {
    depth.with(|d| {
        d.set(d.get() - 1);
        d.get()
    })
}

/// Whether a scope of kind `depth` is active on this thread.
pub(crate) fn active(depth: &'static Depth) -> bool {
    depth.with(|d| d.get() > 0)
}

/// Runs `f` with every feedback layer behaving as [`FeedbackRule::Bp`](crate::FeedbackRule::Bp)
/// on this thread.
///
/// The rule is captured when a layer's forward runs, so the forward must run inside the scope;
/// the `backward()` call may come after it. The layers themselves are not changed. This is how an
/// attack obtains the exact input gradient (`GradientSource::Exact`) of a network trained with
/// another rule: its forward is an ordinary network.
///
/// ```
/// use signsym_feedback::{exact_gradients, exact_gradients_active};
/// assert!(!exact_gradients_active());
/// let inside = exact_gradients(|| exact_gradients_active());
/// assert!(inside);
/// assert!(!exact_gradients_active());
/// ```
pub fn exact_gradients<R>(f: impl FnOnce() -> R) -> R {
    let _guard = ExactGradientsGuard::enter();
    f()
}

/// Whether an [`exact_gradients`] scope is active on this thread.
pub fn exact_gradients_active() -> bool {
    active(&EXACT_DEPTH)
}

/// A guard form of [`exact_gradients`]: exact backpropagation until it is dropped (also on
/// panic). Scopes nest.
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped"]
pub struct ExactGradientsGuard {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl ExactGradientsGuard {
    /// Enters the scope.
    pub fn enter() -> Self {
        enter(&EXACT_DEPTH);
        Self {
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for ExactGradientsGuard {
    fn drop(&mut self) {
        leave(&EXACT_DEPTH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_end_on_panic() {
        let g = ExactGradientsGuard::enter();
        exact_gradients(|| assert!(exact_gradients_active()));
        assert!(exact_gradients_active());
        drop(g);
        assert!(!exact_gradients_active());
        let r = std::panic::catch_unwind(|| exact_gradients(|| panic!("boom")));
        assert!(r.is_err());
        assert!(!exact_gradients_active());
    }
}
