//! A scope in which the weights do not change, so that each layer's feedback tensor `V` is formed
//! once and serves every backward inside it.
//!
//! Training changes the weights at every step, so `V` (`sign(W)`, `M∘sign(W)`, …) is formed anew
//! at each backward. An attack runs dozens of backwards through the same weights: forming `V` of
//! every layer each time is pure repetition (for ResNet-18, 11 million values per backward, about
//! 5 % of an FGSM call). Inside [`frozen_weights`] the Flex backend keeps each `V` it forms and
//! hands it out again for the same weight. brSF, which redraws its magnitudes at every backward
//! by definition, is never reused. Convolutions whose input gradient forms `V₀` slice by slice
//! beside its products (`flex_conv::formed`, ResNet-18's late layers) keep the slices' `V₀`
//! whole at their first backward, with its scale, and read it in place at the later ones, as
//! backpropagation reads `W`: the same values, so the same gradients. Linear layers do not use
//! the store: on Flex their input gradient forms `V` piece by piece beside its product, which
//! costs what copying a stored `V` would.
//!
//! Why a stored `V` cannot go stale: an entry holds a handle on the weight's storage, so no other
//! tensor can take its address while the entry lives, and Flex changes a tensor's values in place
//! only when nothing else holds its storage (an optimizer step inside the scope would write a new
//! tensor, which misses the store). The store is emptied when the outermost scope ends.

use std::cell::Cell;

use crate::scope;

thread_local! {
    static FROZEN_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` with the weights declared fixed on this thread: each feedback layer's `V` is formed
/// at its first backward and reused at the later ones (on Flex; brSF excepted). The
/// `signsym-attacks` evaluations (robust accuracy, AutoAttack, adversarial crafting) run inside
/// it; the gradients are the same values as outside it.
///
/// The stored tensors are released when the outermost scope ends, so keep the scope to one
/// evaluation of one model: it holds one `V` per layer (the size of the weights).
///
/// ```
/// use signsym_feedback::{frozen_weights, frozen_weights_active};
/// assert!(!frozen_weights_active());
/// assert!(frozen_weights(frozen_weights_active));
/// assert!(!frozen_weights_active());
/// ```
pub fn frozen_weights<R>(f: impl FnOnce() -> R) -> R {
    let _guard = FrozenWeightsGuard::enter();
    f()
}

/// Whether a [`frozen_weights`] scope is active on this thread.
pub fn frozen_weights_active() -> bool {
    scope::active(&FROZEN_DEPTH)
}

/// A guard form of [`frozen_weights`]: until it is dropped (also on panic). Scopes nest; the
/// stored feedback tensors are released when the outermost one ends.
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped"]
pub struct FrozenWeightsGuard {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl FrozenWeightsGuard {
    /// Enters the scope.
    pub fn enter() -> Self {
        scope::enter(&FROZEN_DEPTH);
        Self {
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for FrozenWeightsGuard {
    fn drop(&mut self) {
        if scope::leave(&FROZEN_DEPTH) == 0 {
            #[cfg(feature = "flex")]
            flex::clear();
        }
    }
}

#[cfg(feature = "flex")]
pub(crate) mod flex {
    //! The store of formed feedback tensors on Flex.

    use std::cell::RefCell;

    use burn::backend::TensorMetadata;
    use burn::backend::flex::FlexTensor;

    use crate::backend::{FeedbackForm, FeedbackKernel};

    /// A formed `(V₀, factor)` with the tensors it was formed from (kept alive: see the module
    /// documentation).
    struct Entry {
        kernel: FeedbackKernel,
        weight: FlexTensor,
        aux: Option<FlexTensor>,
        parts: (FlexTensor, FlexTensor),
    }

    thread_local! {
        static STORE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    /// Same storage, same extent, same shape: the same values (see the module documentation).
    fn same(a: &FlexTensor, b: &FlexTensor) -> bool {
        match (a.as_slice::<f32>(), b.as_slice::<f32>()) {
            (Some(x), Some(y)) => {
                core::ptr::eq(x.as_ptr(), y.as_ptr())
                    && x.len() == y.len()
                    && a.shape() == b.shape()
            }
            _ => false,
        }
    }

    /// What the store has for a weight.
    pub(crate) enum Lookup {
        /// The parts formed earlier in this scope.
        Found(Box<(FlexTensor, FlexTensor)>),
        /// Nothing yet: parts formed now are to be [`insert`]ed.
        Keep,
        /// Not stored: outside a scope, brSF (redrawn at every backward), backpropagation's
        /// `V₀ = W`, tensors that are not contiguous f32.
        Skip,
    }

    /// The parts formed earlier in this scope for the same weight, auxiliary tensor and kernel.
    pub(crate) fn lookup(
        kernel: FeedbackKernel,
        weight: &FlexTensor,
        aux: Option<&FlexTensor>,
    ) -> Lookup {
        let skip = matches!(
            kernel.form,
            FeedbackForm::RandomMaskedSign(_) | FeedbackForm::Weight
        );
        let comparable =
            weight.as_slice::<f32>().is_some() && aux.is_none_or(|a| a.as_slice::<f32>().is_some());
        if skip || !comparable || !super::frozen_weights_active() {
            return Lookup::Skip;
        }
        let found = STORE.with(|store| {
            store
                .borrow()
                .iter()
                .find(|e| {
                    e.kernel == kernel
                        && same(&e.weight, weight)
                        && match (&e.aux, aux) {
                            (None, None) => true,
                            (Some(a), Some(b)) => same(a, b),
                            _ => false,
                        }
                })
                .map(|e| e.parts.clone())
        });
        found.map_or(Lookup::Keep, |parts| Lookup::Found(Box::new(parts)))
    }

    /// Stores `parts` for the weight, auxiliary tensor and kernel (after a [`Lookup::Keep`]).
    pub(crate) fn insert(
        kernel: FeedbackKernel,
        weight: FlexTensor,
        aux: Option<FlexTensor>,
        parts: (FlexTensor, FlexTensor),
    ) {
        STORE.with(|store| {
            store.borrow_mut().push(Entry {
                kernel,
                weight,
                aux,
                parts,
            })
        });
    }

    /// `form(weight, aux)`, or the parts formed earlier in this scope for the same weight,
    /// auxiliary tensor and kernel.
    pub(crate) fn reuse(
        kernel: FeedbackKernel,
        weight: FlexTensor,
        aux: Option<FlexTensor>,
        form: impl FnOnce(FlexTensor, Option<FlexTensor>) -> (FlexTensor, FlexTensor),
    ) -> (FlexTensor, FlexTensor) {
        match lookup(kernel, &weight, aux.as_ref()) {
            Lookup::Found(parts) => *parts,
            Lookup::Skip => form(weight, aux),
            Lookup::Keep => {
                let parts = form(weight.clone(), aux.clone());
                insert(kernel, weight, aux, parts.clone());
                parts
            }
        }
    }

    /// Entries held on this thread (for tests).
    #[cfg(test)]
    pub(crate) fn len() -> usize {
        STORE.with(|store| store.borrow().len())
    }

    pub(super) fn clear() {
        STORE.with(|store| store.borrow_mut().clear());
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::{FeedbackBackend, FeedbackForm, FeedbackKernel, MaybeTensor, ScaleKind};
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::{Distribution, TensorData};

    fn parts(w: &FlexTensor, form: FeedbackForm) -> (FlexTensor, FlexTensor) {
        let kernel = FeedbackKernel {
            form,
            scale: ScaleKind::MatchNorm,
        };
        <Flex as FeedbackBackend>::feedback_matrix_parts(w.clone(), MaybeTensor::Absent, kernel)
    }

    fn ptr(t: &FlexTensor) -> *const f32 {
        t.as_slice::<f32>().unwrap().as_ptr()
    }

    /// The store holds one entry per weight and kernel, hands out the same tensor again, never
    /// stores brSF's draws, and is empty outside the scope.
    #[test]
    fn the_store_reuses_within_the_scope_only() {
        let w = FlexTensor::from_data(TensorData::new(vec![0.5f32, -2.0, 0.0, 3.0], [2, 2]));
        let (a, _) = parts(&w, FeedbackForm::Sign);
        let (b, _) = parts(&w, FeedbackForm::Sign);
        assert_ne!(ptr(&a), ptr(&b), "outside the scope: formed each time");
        assert_eq!(flex::len(), 0);
        frozen_weights(|| {
            let (a, fa) = parts(&w, FeedbackForm::Sign);
            let (b, fb) = parts(&w, FeedbackForm::Sign);
            assert_eq!(ptr(&a), ptr(&b), "inside: the stored V₀");
            assert_eq!(a.as_slice::<f32>().unwrap(), &[1.0, -1.0, 0.0, 1.0]);
            assert_eq!(fa.as_slice::<f32>(), fb.as_slice::<f32>());
            assert_eq!(flex::len(), 1);
            let random = FeedbackForm::RandomMaskedSign(Distribution::Uniform(0.5, 1.5));
            let _ = parts(&w, random);
            let _ = parts(&w, random);
            assert_eq!(flex::len(), 1, "brSF's draws are never stored");
            // Another weight with the same values is another tensor: its own entry.
            let w2 = FlexTensor::from_data(TensorData::new(vec![0.5f32, -2.0, 0.0, 3.0], [2, 2]));
            let _ = parts(&w2, FeedbackForm::Sign);
            assert_eq!(flex::len(), 2);
        });
        assert_eq!(flex::len(), 0, "released when the scope ends");
    }
}
