//! Weight files and checkpoints fed damaged bytes: bytes overwritten or cut short in the
//! torchvision `.pth` and safetensors fixtures, and in each file of a training checkpoint. The
//! answer is a typed error naming the file, or (weights) a correct read; a resumed run never
//! trains on a changed file and never silently starts over.
//!
//! Cases per property: `PROPTEST_CASES` (48 unless set: each case loads a model).

use std::path::Path;
use std::sync::OnceLock;

use burn::tensor::Device;
use proptest::prelude::*;
use signsym_losses::CrossEntropyConfig;
use signsym_models::{FineTuneConfig, ModelError, TorchvisionWeights, fine_tune};

use crate::torchvision::fixture;
use crate::training::{mnist_test, small_cnn, snapshot};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn damage(valid: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for &(at, value) in edits {
        let n = bytes.len();
        bytes[at % n] = value;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

fn names(err: &ModelError, path: &Path) -> bool {
    match err {
        ModelError::WeightFile { path: p, .. }
        | ModelError::KeyMismatch { path: p, .. }
        | ModelError::ShapeMismatch { path: p, .. }
        | ModelError::NonFiniteWeight { path: p, .. }
        | ModelError::Checkpoint { path: p, .. } => p == path,
        _ => false,
    }
}

fn config(dir: &Path) -> FineTuneConfig {
    FineTuneConfig::new()
        .with_batch_size(32)
        .with_epochs(1)
        .with_seed(5)
        .with_progress(false)
        .with_checkpoint_dir(Some(dir.to_path_buf()))
}

/// A finished one-epoch run's checkpoint (file name → bytes) and its final weights.
type Finished = (Vec<(String, Vec<u8>)>, Vec<(String, Vec<f32>)>);

fn finished_checkpoint() -> &'static Finished {
    static CHECKPOINT: OnceLock<Finished> = OnceLock::new();
    CHECKPOINT.get_or_init(|| {
        let _serial = crate::serial();
        let device = Device::flex().autodiff();
        let dir = tempfile::tempdir().unwrap();
        let ce = CrossEntropyConfig::new().init(&device).unwrap();
        let run = fine_tune(
            small_cnn(&device),
            ce,
            &mnist_test(64),
            None,
            &config(dir.path()),
            None,
        )
        .unwrap();
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        (files, snapshot(&run.network))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn damaged_weight_files(pth in any::<bool>(),
                            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                            cut in prop::option::of(any::<usize>())) {
        let name = if pth { "resnet18_narrow.pth" } else { "resnet18_narrow.safetensors" };
        let valid = std::fs::read(fixture(name)).unwrap();
        let bytes = damage(&valid, &edits, cut);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let original = TorchvisionWeights::new(fixture(name)).read().unwrap();
        match TorchvisionWeights::new(&path).read() {
            // Damage to a value or a key name can read as another value or key (loading into
            // a model then finds the key); each tensor is whole, and an intact file reads
            // exactly as before.
            Ok(tensors) => {
                for (key, data) in &tensors {
                    let len = data.shape().iter().product::<usize>();
                    prop_assert_eq!(data.as_slice::<f32>().unwrap().len(), len, "{}", key);
                }
                if bytes == valid {
                    prop_assert_eq!(tensors, original);
                }
            }
            Err(e) => prop_assert!(names(&e, &path), "{e}"),
        }
    }

    #[test]
    fn damaged_checkpoints_are_refused_on_resume(
        file in 0usize..3,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in prop::option::of(any::<usize>()),
    ) {
        let (files, weights) = finished_checkpoint();
        let dir = tempfile::tempdir().unwrap();
        let (name, valid) = &files[file];
        let damaged = damage(valid, &edits, cut);
        for (n, bytes) in files {
            std::fs::write(dir.path().join(n), if n == name { &damaged } else { bytes }).unwrap();
        }
        let _serial = crate::serial();
        let device = Device::flex().autodiff();
        let ce = CrossEntropyConfig::new().init(&device).unwrap();
        let path = dir.path().join(name);
        match fine_tune(small_cnn(&device), ce, &mnist_test(64), None, &config(dir.path()), None) {
            // Only state.json can change and still resume (a digit of a statistic, say); the
            // weights then still come from the intact model file, never from a fresh start.
            Ok(run) => {
                prop_assert!(damaged == *valid || name == "state.json", "{name} changed but resumed");
                prop_assert_eq!(&snapshot(&run.network), weights);
            }
            Err(e) => {
                prop_assert!(damaged != *valid);
                // Damage to state.json may name the file it now points to, or the directory
                // (settings that no longer match); damage to the others names that file.
                let named = names(&e, &path) || (name == "state.json"
                    && matches!(&e, ModelError::Checkpoint { path: p, .. } if p.starts_with(dir.path())));
                prop_assert!(named, "{name}: {e}");
            }
        }
    }
}
