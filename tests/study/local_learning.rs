//! The local-learning study on a tiny setting: bundled MNIST and a generated image folder.

use clap::Parser;
use signsym::study::local_learning::{self, HYBRID, HYBRID_PRUNED, LocalLearningArgs};
use signsym::study::{Machine, Metric, ResultRow, read_csv, read_json};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LocalLearningArgs,
}

fn tiny(out: &std::path::Path, extra: &[&str]) -> LocalLearningArgs {
    let mut argv: Vec<String> = [
        "x",
        "--train-examples=200",
        "--test-examples=100",
        "--attack-examples=20",
        "--hidden=24",
        "--rule-epochs=4",
        "--epochs=1",
        "--eval-steps=2",
        "--epsilons=0.1",
        "--noise-norms=0,3",
        "--hsj-examples=3",
        "--hsj-queries=200",
        "--quiet",
    ]
    .iter()
    // A flag in `extra` replaces the default's.
    .filter(|a| {
        !extra
            .iter()
            .any(|e| e.split('=').next() == a.split('=').next())
    })
    .map(|s| s.to_string())
    .collect();
    argv.push(format!("--out={}", out.display()));
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(&argv).args
}

fn settings(args: &LocalLearningArgs) -> Vec<String> {
    [HYBRID.to_string(), HYBRID_PRUNED.to_string()]
        .into_iter()
        .chain(args.bp_methods().into_iter().map(|m| m.name))
        .collect()
}

fn check(rows: &[ResultRow], args: &LocalLearningArgs, dataset: &str) {
    for setting in settings(args) {
        let of = |metric: Metric| {
            rows.iter()
                .filter(|r| r.dataset == dataset && r.setting == setting && r.metric == metric)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(Metric::Accuracy).len(), 1, "{setting}");
        // FGSM and PGD at one ε, both exact.
        let robust = of(Metric::RobustAccuracy);
        assert_eq!(robust.len(), 2, "{setting}");
        assert!(robust.iter().all(|r| r.samples == 20 && r.ci_low.is_some()));
        // Noise of norm 0 is no noise: both kinds give the unperturbed accuracy.
        let noise = of(Metric::NoiseAccuracy);
        assert_eq!(noise.len(), 4, "{setting}");
        let at_zero: Vec<f64> = noise
            .iter()
            .filter(|r| r.epsilon == 0.0)
            .map(|r| r.value)
            .collect();
        assert_eq!(at_zero.len(), 2);
        assert_eq!(at_zero[0], at_zero[1], "{setting}");
        assert_eq!(of(Metric::MinAdversarialDistance).len(), 3, "{setting}");
        assert!(
            of(Metric::MinAdversarialDistance)
                .iter()
                .all(|r| r.value >= 0.0)
        );
        assert_eq!(of(Metric::JacobianNorm).len(), 1, "{setting}");
    }
    let pruned = rows
        .iter()
        .find(|r| r.dataset == dataset && r.metric == Metric::PrunedShare)
        .expect("a pruned share");
    assert!((0.0..=1.0).contains(&pruned.value));
    assert!(rows.iter().any(|r| r.dataset == dataset
        && r.setting == "pixels"
        && r.metric == Metric::PowerLawAlpha));
}

#[test]
fn local_learning_robustness_tiny_runs_resume_and_take_an_image_folder() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist");
    let args = tiny(&out, &["--datasets=mnist"]);
    let (rows, summary, files) = local_learning::run(&args, None).unwrap();
    // Spectra, robustness and HopSkipJump plots (SVG + PNG), then CSV, JSON and the summary.
    assert_eq!(files.len(), 9, "{files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 100, "{}", f.display());
    }
    assert_eq!(read_csv(&out.join("results.csv")).unwrap(), rows);
    // The results record the machine the numbers depend on (vector features, threads).
    let json: serde_json::Value = read_json(&out.join("results.json")).unwrap().unwrap();
    let machine: Machine = serde_json::from_value(json["machine"].clone()).unwrap();
    assert_eq!(machine, Machine::current());
    assert!(machine.threads >= 1);
    check(&rows, &args, "mnist");
    assert!(summary.contains("hybrid pruned"), "{summary}");
    // A rerun finds every part finished and gives the same rows.
    let (again, _, _) = local_learning::run(&args, None).unwrap();
    assert_eq!(again, rows);
    let other = tiny(&out, &["--datasets=mnist", "--seed=3"]);
    assert!(
        local_learning::run(&other, None)
            .unwrap_err()
            .to_string()
            .contains("other settings")
    );

    // An image folder: two classes of 16×16 RGB PNGs, dark and bright.
    let folder = dir.path().join("folder");
    for (split, count) in [("train", 40), ("test", 20)] {
        for (class, base) in [("dark", 40u8), ("bright", 180u8)] {
            let d = folder.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(16, 16, |x, y| {
                    let v = base.wrapping_add(((x * 7 + y * 3 + i * 11) % 50) as u8);
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let out = dir.path().join("folder-out");
    let folder_arg = format!("--data-dir={}", folder.display());
    let args = tiny(
        &out,
        &[
            "--datasets=folder",
            &folder_arg,
            "--image-size=16",
            "--epochs=10",
            "--rule-epochs=20",
            "--batch-size=16",
        ],
    );
    let (rows, _, _) = local_learning::run(&args, None).unwrap();
    check(&rows, &args, "folder");
    let clean = rows
        .iter()
        .find(|r| r.setting == HYBRID && r.metric == Metric::Accuracy)
        .unwrap();
    assert_eq!(clean.samples, 40);
    // Dark against bright is easy: the hybrid's head separates them.
    assert!(clean.value > 0.9, "{}", clean.value);
}

/// The local-learning study's evaluation (noise, FGSM/PGD, HopSkipJump distances,
/// representation) in two shards, merged: the unsharded run's `results.csv` byte for byte.
#[test]
fn local_learning_shards_merged_equal_the_unsharded_run() {
    let _serial = crate::serial();
    let whole = tempfile::tempdir().unwrap();
    let sharded = tempfile::tempdir().unwrap();
    let extra = ["--datasets=mnist", "--attack-batch=8"];
    let (rows, _, _) = local_learning::run(&tiny(whole.path(), &extra), None).unwrap();
    for shard in ["--shard=1/2", "--shard=2/2"] {
        let args = tiny(sharded.path(), &[extra[0], extra[1], shard]);
        let (part, summary, files) = local_learning::run(&args, None).unwrap();
        assert!(part.is_empty() && files.is_empty(), "{summary}");
    }
    let args = tiny(sharded.path(), &[extra[0], extra[1], "--merge"]);
    let (merged, _, _) = local_learning::run(&args, None).unwrap();
    assert_eq!(merged, rows);
    let csv = |d: &tempfile::TempDir| std::fs::read(d.path().join("results.csv")).unwrap();
    assert_eq!(csv(&sharded), csv(&whole), "merged results.csv differs");
    for metric in [
        Metric::NoiseAccuracy,
        Metric::MinAdversarialDistance,
        Metric::JacobianNorm,
    ] {
        assert!(rows.iter().any(|r| r.metric == metric), "no {metric}");
    }
}
