//! Per-thread random streams for what training and attacks draw, so that two threads never share
//! a generator.
//!
//! Burn's backends keep one generator per process (`Backend::seed` replaces it for everyone):
//! while one thread fine-tunes a brSF network and another attacks one, each thread's draws would
//! depend on when the other drew. signsym draws through a [`RandomScope`] instead: a generator
//! that belongs to the thread that entered it, seeded from the caller's seed. brSF's magnitudes
//! (its key for the counter-based stream) and the models' dropout masks come from the innermost
//! scope of the thread that runs the pass; without a scope they come from the device's
//! generator, as before.
//!
//! The scope's generator is the one Flex seeds for `Backend::seed` (`StdRng::seed_from_u64`),
//! drawn the same way, so on Flex a scope gives exactly the numbers `device.seed(seed)` gave a
//! single thread.
//!
//! What still needs the device's generator (burn's parameter initialisers) goes through
//! [`with_device_seed`], which holds a process-wide lock from the seeding to the last draw.

use std::cell::{Cell, RefCell};
use std::sync::{Mutex, MutexGuard};

use burn::tensor::{Device, Distribution, Shape, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::splitmix64;

thread_local! {
    static STREAMS: RefCell<Vec<StdRng>> = const { RefCell::new(Vec::new()) };
    static DEVICE_LOCK_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Serialises seeding the device's generator and drawing from it across threads.
static DEVICE_RNG: Mutex<()> = Mutex::new(());

/// A guard: until it is dropped, what signsym draws on this thread comes from a generator seeded
/// with `seed` (scopes nest; the innermost one draws). See the [module docs](self).
///
/// ```
/// use signsym_feedback::random::{RandomScope, scoped_key};
///
/// assert_eq!(scoped_key(), None); // no scope: the device's generator would draw
/// let first = {
///     let _scope = RandomScope::enter(7);
///     scoped_key().unwrap()
/// };
/// let again = RandomScope::run(7, || scoped_key().unwrap());
/// assert_eq!(first, again); // same seed, same draw
/// assert_ne!(first, RandomScope::run(8, || scoped_key().unwrap()));
/// ```
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped"]
pub struct RandomScope {
    // Entered and left on one thread.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl RandomScope {
    /// Enters a scope seeded with `seed`.
    pub fn enter(seed: u64) -> Self {
        STREAMS.with(|s| s.borrow_mut().push(StdRng::seed_from_u64(seed)));
        Self {
            _not_send: core::marker::PhantomData,
        }
    }

    /// Runs `f` inside a scope seeded with `seed`.
    pub fn run<R>(seed: u64, f: impl FnOnce() -> R) -> R {
        let _scope = Self::enter(seed);
        f()
    }
}

impl Drop for RandomScope {
    fn drop(&mut self) {
        STREAMS.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// Whether a [`RandomScope`] is active on this thread.
pub fn scope_active() -> bool {
    STREAMS.with(|s| !s.borrow().is_empty())
}

/// `f` applied to the innermost scope's generator, `None` without a scope.
fn with_stream<R>(f: impl FnOnce(&mut StdRng) -> R) -> Option<R> {
    STREAMS.with(|s| s.borrow_mut().last_mut().map(f))
}

/// A 64-bit key from two uniform `f32` draws of `rng`, as Flex draws them.
pub(crate) fn key_from(rng: &mut StdRng) -> u64 {
    let draw = TensorData::random::<f32, _, _>(Shape::new([2]), Distribution::Default, rng);
    let values = draw
        .as_slice::<f32>()
        .expect("a TensorData drawn as f32 is f32");
    let bits = (u64::from(values[0].to_bits()) << 32) | u64::from(values[1].to_bits());
    splitmix64(bits)
}

/// The next key of the innermost scope (what one brSF backward keys its magnitudes with), or
/// `None` without a scope.
pub fn scoped_key() -> Option<u64> {
    with_stream(key_from)
}

/// A tensor drawn on the host from the innermost scope (then moved to `device`), or `None`
/// without a scope. For small tensors (dropout masks): a weight-sized draw belongs in a
/// counter-based stream keyed by [`scoped_key`].
pub fn scoped_random<const D: usize>(
    shape: [usize; D],
    distribution: Distribution,
    device: &Device,
) -> Option<Tensor<D>> {
    with_stream(|rng| {
        Tensor::from_data(
            TensorData::random::<f32, _, _>(Shape::new(shape), distribution, rng),
            device,
        )
    })
}

/// The lock behind [`with_device_seed`], re-entrant on one thread.
pub(crate) struct DeviceRngGuard {
    _lock: Option<MutexGuard<'static, ()>>,
}

impl DeviceRngGuard {
    pub(crate) fn acquire() -> Self {
        let depth = DEVICE_LOCK_DEPTH.with(|d| {
            let v = d.get();
            d.set(v + 1);
            v
        });
        // Poisoning only means another thread panicked mid-draw: the generator is still usable.
        let lock = (depth == 0).then(|| DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner()));
        Self { _lock: lock }
    }
}

impl Drop for DeviceRngGuard {
    fn drop(&mut self) {
        DEVICE_LOCK_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Seeds `device`'s generator with `seed` and runs `f` while no other thread can seed or draw
/// through signsym: what `f` draws from the device (burn's parameter initialisers) depends on
/// `seed` alone. Calls nest on one thread.
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use signsym_feedback::random::with_device_seed;
///
/// let device = Device::flex();
/// let draw = || Tensor::<1>::random([4], Distribution::Default, &device).into_data();
/// let a = with_device_seed(&device, 3, draw);
/// let b = with_device_seed(&device, 3, draw);
/// assert_eq!(a, b);
/// ```
pub fn with_device_seed<R>(device: &Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = DeviceRngGuard::acquire();
    device.seed(seed);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_threads_do_not_share_them() {
        let outer = RandomScope::enter(1);
        let a = scoped_key().unwrap();
        let inner = RandomScope::run(2, || scoped_key().unwrap());
        // The inner scope did not advance the outer one.
        let b = scoped_key().unwrap();
        let fresh: Vec<u64> =
            RandomScope::run(1, || (0..2).map(|_| scoped_key().unwrap()).collect());
        assert_eq!(fresh, vec![a, b]);
        assert_eq!(inner, RandomScope::run(2, || scoped_key().unwrap()));
        // Another thread sees no scope.
        assert!(
            std::thread::spawn(|| scoped_key().is_none())
                .join()
                .unwrap()
        );
        drop(outer);
        assert!(!scope_active());
    }

    /// On Flex the scope's draws are the device generator's after `Backend::seed`.
    #[cfg(feature = "flex")]
    #[test]
    fn scope_draws_what_the_seeded_device_draws() {
        let device = Device::flex();
        let mut from_device = Vec::new();
        with_device_seed(&device, 42, || {
            for _ in 0..3 {
                let t = Tensor::<1>::random([2], Distribution::Default, &device);
                let v = t.into_data().try_to_vec::<f32>().unwrap();
                let bits = (u64::from(v[0].to_bits()) << 32) | u64::from(v[1].to_bits());
                from_device.push(splitmix64(bits));
            }
        });
        let scoped: Vec<u64> =
            RandomScope::run(42, || (0..3).map(|_| scoped_key().unwrap()).collect());
        assert_eq!(scoped, from_device);
        let mask = RandomScope::run(5, || {
            scoped_random([1000], Distribution::Bernoulli(0.25), &device).unwrap()
        });
        let kept = mask.into_data().try_to_vec::<f32>().unwrap();
        let ones = kept.iter().filter(|v| **v == 1.0).count();
        assert!(kept.iter().all(|v| *v == 0.0 || *v == 1.0));
        assert!(
            (200..300).contains(&ones),
            "{ones} of 1000 kept at p = 0.25"
        );
    }
}
