//! Our models against PyTorch: narrow copies of the torchvision architectures with the same key
//! layout, saved by `scripts/make_model_fixtures.py` as `.pth` and safetensors with a fixed
//! input and PyTorch's output; and the full-size models' parameter names and shapes against
//! torchvision's lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use signsym_models::{
    AlexNetConfig, Backbone, LoadScope, ModelError, Network, ResNetConfig, Task,
    TorchvisionWeights, Vgg16Config, eval_mode, torchvision_layout,
};

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io(arch: &str) -> BTreeMap<String, TensorData> {
    TorchvisionWeights::new(fixture(&format!("{arch}_narrow_io.safetensors")))
        .read()
        .unwrap()
}

fn tensor(data: &TensorData, device: &Device) -> Tensor<4> {
    Tensor::from_data(data.clone(), device)
}

fn max_abs_diff(ours: Tensor<2>, expected: &TensorData) -> f32 {
    let expected = expected.try_to_vec::<f32>().unwrap();
    let ours = ours.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(ours.len(), expected.len());
    ours.iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check_arch<M: Backbone>(arch: &str, build: impl Fn(&Device) -> Network<M>) {
    let device = Device::flex();
    let io = io(arch);
    for ext in ["pth", "safetensors"] {
        let mut net = build(&device);
        let report = TorchvisionWeights::new(fixture(&format!("{arch}_narrow.{ext}")))
            .load_into(&mut net, LoadScope::Full)
            .unwrap();
        assert!(
            report.head_kept.is_empty() && report.ignored.is_empty(),
            "{report:?}"
        );
        // Plain (non-autodiff) device: batch norm uses its running statistics, dropout is off.
        let out = net.try_forward(tensor(&io["input"], &device)).unwrap();
        let err = max_abs_diff(out, &io["output_eval"]);
        println!("{arch} ({ext}): eval max |ours - torch| = {err:.3e}");
        assert!(err < 1e-4, "{arch} {ext}: {err}");

        // The same through autodiff in eval mode (the attack setting).
        let ad = device.clone().autodiff();
        let net_ad = eval_mode(net.clone().to_device(&ad));
        let out = net_ad.forward(tensor(&io["input"], &ad));
        assert!(max_abs_diff(out, &io["output_eval"]) < 1e-4);

        if let Some(train) = io.get("output_train") {
            // Training mode on an autodiff device: batch statistics.
            let net_train = net.clone().to_device(&ad);
            let out = net_train.forward(tensor(&io["input"], &ad));
            let err = max_abs_diff(out, train);
            println!("{arch} ({ext}): train-mode max |ours - torch| = {err:.3e}");
            assert!(err < 1e-4, "{arch} {ext} train: {err}");
        }
    }
}

#[test]
fn alexnet_matches_pytorch() {
    let _serial = crate::serial();
    check_arch("alexnet", |d| {
        let backbone = AlexNetConfig::new()
            .with_channels([8, 16, 16, 12, 12])
            .with_hidden(24)
            .init(d)
            .unwrap();
        Network::new(backbone, Task::classification(10), d).unwrap()
    });
}

#[test]
fn vgg16_matches_pytorch() {
    let _serial = crate::serial();
    check_arch("vgg16", |d| {
        let backbone = Vgg16Config::new()
            .with_channels([4, 6, 8, 8, 8])
            .with_hidden(16)
            .init(d)
            .unwrap();
        Network::new(backbone, Task::classification(10), d).unwrap()
    });
}

fn narrow_resnet(cifar: bool, device: &Device) -> Network<signsym_models::ResNet> {
    let backbone = ResNetConfig::resnet18()
        .with_widths([4, 8, 8, 12])
        .with_cifar_stem(cifar)
        .init(device)
        .unwrap();
    Network::new(backbone, Task::classification(10), device).unwrap()
}

#[test]
fn resnet18_matches_pytorch() {
    let _serial = crate::serial();
    check_arch("resnet18", |d| narrow_resnet(false, d));
}

#[test]
fn resnet18_cifar_stem_matches_pytorch() {
    let _serial = crate::serial();
    check_arch("resnet18_cifarstem", |d| narrow_resnet(true, d));
}

fn torchvision_list(arch: &str) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(fixture(&format!("{arch}_params.txt")))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, shape) = l.split_once('\t').unwrap();
            let shape = shape
                .trim_matches(['[', ']'])
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            (key.to_string(), shape)
        })
        .collect()
}

fn check_names<M: Backbone>(arch: &str, net: &Network<M>) {
    let ours: Vec<(String, Vec<usize>)> = torchvision_layout(net)
        .into_iter()
        .map(|p| (p.torchvision, p.shape))
        .collect();
    let (buffers, theirs): (Vec<_>, Vec<_>) = torchvision_list(arch)
        .into_iter()
        .partition(|(k, _)| k.ends_with("num_batches_tracked"));
    // burn's batch norm keeps no step counter; those are the only keys we lack.
    assert!(buffers.iter().all(|(_, s)| s.is_empty()));
    assert_eq!(ours, theirs, "{arch}");
}

#[test]
fn full_size_models_have_torchvision_names_and_shapes() {
    let _serial = crate::serial();
    let device = Device::flex();
    let head = Task::classification(1000);
    let alexnet = AlexNetConfig::new().init(&device).unwrap();
    check_names("alexnet", &Network::new(alexnet, head, &device).unwrap());
    let resnet = ResNetConfig::resnet18().init(&device).unwrap();
    check_names("resnet18", &Network::new(resnet, head, &device).unwrap());
    let vgg = Vgg16Config::new().init(&device).unwrap();
    check_names("vgg16", &Network::new(vgg, head, &device).unwrap());
}

#[test]
fn backbone_scope_keeps_the_new_head_and_ignores_the_old_one() {
    let _serial = crate::serial();
    let device = Device::flex();
    let backbone = ResNetConfig::resnet18()
        .with_widths([4, 8, 8, 12])
        .init(&device)
        .unwrap();
    let mut net = Network::new(backbone, Task::hashing(32), &device).unwrap();
    let head_before = net.head.linear.weight.val().into_data();
    let report = TorchvisionWeights::new(fixture("resnet18_narrow.pth"))
        .load_into(&mut net, LoadScope::Backbone)
        .unwrap();
    assert_eq!(report.ignored, ["fc.bias", "fc.weight"]);
    assert_eq!(report.head_kept, ["head.linear.weight", "head.linear.bias"]);
    assert_eq!(report.loaded.len(), torchvision_layout(&net).len() - 2);
    assert_eq!(net.head.linear.weight.val().into_data(), head_before);
    // The loaded backbone is PyTorch's: its stem weight equals the file's.
    let file = TorchvisionWeights::new(fixture("resnet18_narrow.safetensors"))
        .read()
        .unwrap();
    assert_eq!(
        net.backbone
            .conv1
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
        file["conv1.weight"].try_to_vec::<f32>().unwrap()
    );

    // The same file under `Full` refuses the 10-class fc for a 32-bit head.
    let err = TorchvisionWeights::new(fixture("resnet18_narrow.pth"))
        .load_into(&mut net, LoadScope::Full)
        .unwrap_err();
    match err {
        ModelError::ShapeMismatch { mismatches, .. } => {
            let keys: Vec<_> = mismatches.iter().map(|m| m.0.as_str()).collect();
            assert_eq!(keys, ["fc.weight", "fc.bias"]);
            assert_eq!(mismatches[0].1, vec![10, 12]);
            assert_eq!(mismatches[0].2, vec![32, 12]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn mismatched_files_are_refused_with_the_offending_keys() {
    let _serial = crate::serial();
    let device = Device::flex();
    let file = TorchvisionWeights::new(fixture("resnet18_narrow.pth"));

    // The keys a `Backbone` load refuses for a ResNet with other block counts.
    let refused = |blocks: [usize; 4]| {
        let backbone = ResNetConfig::resnet18()
            .with_widths([4, 8, 8, 12])
            .with_blocks(blocks)
            .init(&device)
            .unwrap();
        let mut net = Network::new(backbone, Task::classification(10), &device).unwrap();
        match file.load_into(&mut net, LoadScope::Backbone).unwrap_err() {
            ModelError::KeyMismatch {
                missing,
                unexpected,
                ..
            } => (missing, unexpected, net),
            other => panic!("{other}"),
        }
    };

    // One more block in layer4: its 10 keys (2 convs, 2 batch norms) are missing from the file.
    let (missing, unexpected, mut net) = refused([2, 2, 2, 3]);
    assert!(unexpected.is_empty());
    assert_eq!(missing.len(), 10, "{missing:?}");
    assert!(missing.iter().all(|k| k.starts_with("layer4.2.")));
    // Under `Matching` the same load succeeds and reports them.
    let report = file.load_into(&mut net, LoadScope::Matching).unwrap();
    assert_eq!(report.missing, missing);

    // One block fewer: the file's layer4.1 keys are unexpected.
    let (missing, unexpected, _) = refused([2, 2, 2, 1]);
    assert!(missing.is_empty());
    assert_eq!(unexpected.len(), 10, "{unexpected:?}");
    assert!(unexpected.iter().all(|k| k.starts_with("layer4.1.")));

    // Other widths: shape mismatches name the keys.
    let mut wide = narrow_resnet_widths([4, 8, 8, 16], &device);
    let err = file.load_into(&mut wide, LoadScope::Backbone).unwrap_err();
    let ModelError::ShapeMismatch { mismatches, .. } = err else {
        panic!("{err}")
    };
    assert!(mismatches.iter().any(|m| m.0 == "layer4.0.conv1.weight"));
}

fn narrow_resnet_widths(widths: [usize; 4], device: &Device) -> Network<signsym_models::ResNet> {
    let backbone = ResNetConfig::resnet18()
        .with_widths(widths)
        .init(device)
        .unwrap();
    Network::new(backbone, Task::classification(10), device).unwrap()
}

#[test]
fn corrupt_truncated_and_missing_files_are_typed_errors() {
    let _serial = crate::serial();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut net = narrow_resnet_widths([4, 8, 8, 12], &device);
    for name in ["resnet18_narrow.pth", "resnet18_narrow.safetensors"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = TorchvisionWeights::new(&path)
                .load_into(&mut net, LoadScope::Backbone)
                .unwrap_err();
            assert!(
                matches!(err, ModelError::WeightFile { .. }),
                "{name} cut at {cut}: {err}"
            );
        }
    }
    let err = TorchvisionWeights::new(dir.path().join("absent.pth"))
        .load_into(&mut net, LoadScope::Backbone)
        .unwrap_err();
    assert!(matches!(err, ModelError::WeightFile { .. }));

    // A NaN in a safetensors payload: patch conv1.weight's first value.
    let mut bytes = std::fs::read(fixture("resnet18_narrow.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start =
        header["conv1.weight"]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let path = dir.path().join("nan.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = TorchvisionWeights::new(&path)
        .load_into(&mut net, LoadScope::Backbone)
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::NonFiniteWeight { key, .. } if key == "conv1.weight"),
        "{err}"
    );
}

/// The wgpu device, when the `wgpu` feature is on and an adapter starts (required in CI).
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Option<Device> {
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        Tensor::<1>::from_floats([1.0, 2.0], &device)
            .sum()
            .into_scalar::<f32>();
        device
    });
    match probe {
        Ok(device) => Some(device),
        Err(_) if std::env::var_os("SIGNSYM_REQUIRE_WGPU").is_some() => {
            panic!("SIGNSYM_REQUIRE_WGPU is set but no wgpu adapter could be started")
        }
        Err(_) => {
            eprintln!("note: no wgpu adapter here; skipping the wgpu cross-check");
            None
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn resnet18_matches_pytorch_on_wgpu() {
    let _serial = crate::serial();
    let Some(device) = wgpu_device() else { return };
    let io = io("resnet18");
    let mut net = narrow_resnet(false, &device);
    TorchvisionWeights::new(fixture("resnet18_narrow.safetensors"))
        .load_into(&mut net, LoadScope::Full)
        .unwrap();
    let err = max_abs_diff(
        net.forward(tensor(&io["input"], &device)),
        &io["output_eval"],
    );
    println!("resnet18 on wgpu: eval max |ours - torch| = {err:.3e}");
    assert!(err < 1e-4, "{err}");
    let ad = device.autodiff();
    let train = net.to_device(&ad).forward(tensor(&io["input"], &ad));
    let err = max_abs_diff(train, &io["output_train"]);
    println!("resnet18 on wgpu: train-mode max |ours - torch| = {err:.3e}");
    assert!(err < 1e-4, "{err}");
}
