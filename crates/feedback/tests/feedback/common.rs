//! Helpers shared by the feedback integration tests.
#![allow(dead_code)]

use burn::tensor::{Device, Distribution, Tensor};

/// The devices every numeric test runs on: Flex always, and wgpu when the `wgpu` feature is on.
///
/// Without a Vulkan driver the wgpu device cannot start; the test then fails if
/// `SIGNSYM_REQUIRE_WGPU` is set (as in CI, which installs Mesa's lavapipe) and otherwise runs on
/// Flex alone, saying so.
pub fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut devices = vec![Device::flex().autodiff()];
    #[cfg(feature = "wgpu")]
    {
        let probe = std::panic::catch_unwind(|| {
            let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
            let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
            t.sum().into_scalar::<f32>();
            device
        });
        match probe {
            Ok(device) => devices.push(device.autodiff()),
            Err(_) if std::env::var_os("SIGNSYM_REQUIRE_WGPU").is_some() => {
                panic!("SIGNSYM_REQUIRE_WGPU is set but no wgpu adapter could be started")
            }
            Err(_) => eprintln!("note: no wgpu adapter here; testing on Flex only"),
        }
    }
    devices
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
}

/// Largest absolute difference, relative to the largest magnitude of the reference.
pub fn rel_err<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let got = host(got);
    let want = host(want);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
        / scale
}

pub fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>, tol: f32) {
    let err = rel_err(got, want);
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
}

pub fn assert_identical<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) {
    let (g, w) = (host(got), host(want));
    assert_eq!(g.len(), w.len(), "{what}: sizes differ");
    let differing = g
        .iter()
        .zip(&w)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differing, 0, "{what}: {differing} entries differ bitwise");
}

pub fn frobenius<const D: usize>(t: Tensor<D>) -> f32 {
    host(t).iter().map(|v| v * v).sum::<f32>().sqrt()
}

pub fn digits_path() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/sklearn_digits.csv.gz"
    )
    .to_string()
}

/// Serialises the tests of one binary: they seed and draw from the shared device RNG, and brSF's
/// reproduction needs no other test drawing in between.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
