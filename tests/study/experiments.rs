//! The training-method experiments on a tiny setting: every output is written, the CSV holds
//! the JSON's rows, a rerun loads what is finished, and other settings are refused.

use clap::Parser;
use signsym::study::fair_adversarial::{self, FairArgs};
use signsym::study::regularizer_comparison::{self, RegularizerArgs};
use signsym::study::spectral_transfer::{self, SpectralArgs};
use signsym::study::{Metric, ResultRow, read_csv, read_json};

fn tiny(out: &std::path::Path) -> Vec<String> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    [
        "x",
        "--rules=bp",
        "--pretrain-examples=128",
        "--train-examples=96",
        "--test-examples=64",
        "--attack-examples=16",
        "--eval-steps=2",
        "--batch-size=32",
        "--quiet",
        &format!("--data-dir={data}"),
        &format!("--out={}", out.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[derive(serde::Deserialize)]
struct Results {
    rows: Vec<ResultRow>,
}

fn check_outputs(out: &std::path::Path, files: &[std::path::PathBuf]) -> Vec<ResultRow> {
    for f in files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len > 100, "{} has {len} bytes", f.display());
    }
    let csv = read_csv(&out.join("results.csv")).unwrap();
    let json: Results = read_json(&out.join("results.json")).unwrap().unwrap();
    assert_eq!(csv, json.rows, "CSV and JSON disagree");
    csv
}

#[derive(Parser)]
struct Fair {
    #[command(flatten)]
    args: FairArgs,
}
#[derive(Parser)]
struct Spectral {
    #[command(flatten)]
    args: SpectralArgs,
}
#[derive(Parser)]
struct Regularizers {
    #[command(flatten)]
    args: RegularizerArgs,
}

#[test]
fn fair_adversarial_training_tiny_run() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut argv = tiny(dir.path());
    argv.extend(["--lambdas=0.5".to_string(), "--train-steps=1".into()]);
    let args = Fair::parse_from(&argv).args;
    let outputs = fair_adversarial::run(&args, None).unwrap();
    assert_eq!(outputs.files.len(), 7);
    let rows = check_outputs(dir.path(), &outputs.files);
    for setting in ["standard", "pgd-at", "sy-far λ=0.5"] {
        for metric in [
            Metric::Accuracy,
            Metric::RobustAccuracy,
            Metric::Asymmetry,
            Metric::MaxTargetShare,
        ] {
            assert!(
                rows.iter()
                    .any(|r| r.setting == setting && r.metric == metric),
                "{setting}: no {metric}"
            );
        }
    }
    let robust = rows
        .iter()
        .find(|r| r.metric == Metric::RobustAccuracy)
        .unwrap();
    assert_eq!(robust.samples, 16);
    assert!(robust.ci_low.unwrap() <= robust.value && robust.value <= robust.ci_high.unwrap());
    assert!(
        outputs.summary.contains("sy-far λ=0.5"),
        "{}",
        outputs.summary
    );
    // A rerun loads every finished part and gives the same rows.
    let before = std::fs::metadata(dir.path().join("rows/bp-pgd-at.json"))
        .unwrap()
        .modified()
        .unwrap();
    let again = fair_adversarial::run(&args, None).unwrap();
    assert_eq!(again.rows, outputs.rows);
    let after = std::fs::metadata(dir.path().join("rows/bp-pgd-at.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
    argv.push("--seed=3".into());
    let err = fair_adversarial::run(&Fair::parse_from(&argv).args, None).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn spectral_transfer_and_regularizer_comparison_tiny_runs() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut argv = tiny(&dir.path().join("spectral"));
    argv.push("--gammas=0.1".into());
    let (rows, summary, files) =
        spectral_transfer::run(&Spectral::parse_from(&argv).args, None).unwrap();
    assert_eq!(files.len(), 5);
    assert_eq!(check_outputs(&dir.path().join("spectral"), &files), rows);
    for setting in [
        "none / probe",
        "hidden γ=0.1 / probe",
        "end-to-end γ=0.1 / fine-tune",
    ] {
        assert!(
            rows.iter()
                .any(|r| r.setting == setting && r.metric == Metric::RobustAccuracy),
            "{setting}"
        );
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r.metric == Metric::SigmaMax && r.setting == "none / pre-trained")
            .count(),
        4,
        "σ_max of the small CNN's four layers"
    );
    assert!(summary.contains("end-to-end"));

    let argv = tiny(&dir.path().join("regularizers"));
    let (rows, summary, files) =
        regularizer_comparison::run(&Regularizers::parse_from(&argv).args, None).unwrap();
    assert_eq!(files.len(), 5);
    assert_eq!(
        check_outputs(&dir.path().join("regularizers"), &files),
        rows
    );
    for metric in [Metric::JacobianNorm, Metric::PowerLawAlpha] {
        assert_eq!(
            rows.iter()
                .filter(|r| r.metric == metric && r.setting.ends_with("/ probe"))
                .count(),
            4,
            "{metric} for none, L2, Jacobian and spectral"
        );
    }
    assert!(summary.contains("jacobian λ="), "{summary}");
}

/// Sy-FAR's experiment in three shards of its attacked images (batches of 4: the 16 images are
/// 4 batches, so one shard holds two) and merged: the unsharded run's `results.csv` byte for
/// byte, fairness rows included; a missing shard is named, not merged around.
#[test]
fn experiment_shards_merged_equal_the_unsharded_run() {
    let _serial = crate::serial();
    let whole = tempfile::tempdir().unwrap();
    let sharded = tempfile::tempdir().unwrap();
    let argv = |out: &std::path::Path, extra: &[&str]| {
        let mut argv = tiny(out);
        argv.extend(
            ["--lambdas=0.5", "--train-steps=1", "--attack-batch=4"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string()),
        );
        Fair::parse_from(&argv).args
    };
    let unsharded = fair_adversarial::run(&argv(whole.path(), &[]), None).unwrap();
    for i in 1..=3 {
        let shard = format!("--shard={i}/3");
        let out = fair_adversarial::run(&argv(sharded.path(), &[&shard]), None).unwrap();
        assert!(
            out.summary.contains(&format!("shard {i}/3 saved")),
            "{}",
            out.summary
        );
        assert!(out.files.is_empty());
    }
    assert!(!sharded.path().join("results.csv").exists());
    let merged = fair_adversarial::run(&argv(sharded.path(), &["--merge"]), None).unwrap();
    assert_eq!(merged.rows, unsharded.rows);
    let csv = |d: &tempfile::TempDir| std::fs::read(d.path().join("results.csv")).unwrap();
    assert_eq!(csv(&sharded), csv(&whole), "merged results.csv differs");
    assert!(
        merged
            .rows
            .iter()
            .any(|r| r.metric == Metric::WorstClassRobustAccuracy)
    );

    // A missing shard is an error that names what is there.
    let again = tempfile::tempdir().unwrap();
    fair_adversarial::run(&argv(again.path(), &["--shard=1/2"]), None).unwrap();
    let err = fair_adversarial::run(&argv(again.path(), &["--merge"]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1/2") && err.contains("shard"), "{err}");
}
