//! The paper examples' library entry points on the bundled digits, parsed from command lines as
//! the binaries parse them: rows of separate runs into one directory merge, CSV and JSON agree.

use clap::Parser;
use signsym::study::paper::{PaperArgs, table1_classification};
use signsym::study::read_csv;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    paper: PaperArgs,
}

fn args(out: &std::path::Path, rules: &str) -> PaperArgs {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    Cli::try_parse_from([
        "table1",
        "--backbone=small-cnn",
        "--dataset=digits",
        "--pretrain-dataset=digits",
        &format!("--data-dir={data}"),
        "--epochs=3",
        "--backbone-lr=3e-3",
        "--head-lr=1e-2",
        "--pretrain-lr=3e-3",
        "--pretrain-epochs=3",
        &format!("--rules={rules}"),
        "--quiet",
        &format!("--out={}", out.display()),
    ])
    .unwrap()
    .paper
}

#[test]
fn table1_runs_merge_into_one_table() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let mut first = args(dir.path(), "bp,usf");
    first.pretrain_examples = 1000;
    let text = table1_classification(&first, None).unwrap();
    assert!(text.contains("small_cnn / digits / accuracy"), "{text}");
    let rows = read_csv(&dir.path().join("results.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(
            (row.metric, row.samples),
            (signsym::study::Metric::Accuracy, 359)
        );
        assert!(row.value > 0.5, "{}: {}", row.rule, row.value);
        assert!(row.ci_low.unwrap() < row.value && row.value < row.ci_high.unwrap());
    }

    // A second run with another rule adds its row and keeps the others.
    let mut second = args(dir.path(), "fa");
    second.pretrain_examples = 1000;
    table1_classification(&second, None).unwrap();
    let merged = read_csv(&dir.path().join("results.csv")).unwrap();
    let rules: Vec<&str> = merged.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(rules, ["bp", "usf", "fa"]);
    assert_eq!(merged[..2], rows[..]);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    let values: Vec<f64> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, merged.iter().map(|r| r.value).collect::<Vec<_>>());
    assert_eq!(json["settings"].as_array().unwrap().len(), 2);
    // One machine per run merged: the vector features decide the last digits.
    let machines: Vec<signsym::study::Machine> =
        serde_json::from_value(json["machines"].clone()).unwrap();
    assert_eq!(machines, vec![signsym::study::Machine::current(); 2]);
}

#[test]
fn bad_command_lines_are_refused() {
    let _serial = crate::serial();
    assert!(Cli::try_parse_from(["x", "--dataset=svhn"]).is_err());
    assert!(Cli::try_parse_from(["x", "--backbone=lenet"]).is_err());
    assert!(Cli::try_parse_from(["x", "--device=tpu"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), "bp");
    a.weights = Some("w.pth".into());
    let err = table1_classification(&a, None).unwrap_err().to_string();
    assert!(
        err.contains("small CNN has no torchvision weights"),
        "{err}"
    );
    let mut b = args(dir.path(), "bp");
    b.dataset = "coco".parse().unwrap();
    // Multi-label lists train with binary cross-entropy; here the list files are missing.
    b.data_dir = Some(dir.path().join("no-coco"));
    let err = table1_classification(&b, None).unwrap_err().to_string();
    assert!(err.contains("no-coco"), "{err}");
}

/// Figure 2 and Tables 3–4 in three shards (batches of 4: the 24 attacked images are 6 batches,
/// AutoAttack's 8 two), merged: the unsharded run's `results.csv`, byte for byte.
#[test]
fn robustness_shards_merged_equal_the_unsharded_run() {
    use signsym::study::Shard;
    use signsym::study::paper::{
        AutoAttackSubset, RobustnessArgs, figure2_classification_robustness, table3_4_blackbox,
    };
    let _serial = crate::serial();
    type Entry = fn(
        &PaperArgs,
        &RobustnessArgs,
        Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<String, signsym::study::StudyError>;
    let gradient = RobustnessArgs {
        epsilons: vec![0.0, 0.1, 0.3],
        steps: 2,
        autoattack: Some(AutoAttackSubset {
            examples: 8,
            steps: 2,
            targets: 2,
            queries: 10,
        }),
        attack_batch: 4,
        ..RobustnessArgs::paper()
    };
    let decision = RobustnessArgs {
        epsilons: vec![0.0, 1.0, 3.0],
        queries: 60,
        autoattack: None,
        ..gradient.clone()
    };
    for (name, run, attacks) in [
        (
            "figure2",
            figure2_classification_robustness as Entry,
            gradient,
        ),
        ("table3_4", table3_4_blackbox as Entry, decision),
    ] {
        let whole_dir = tempfile::tempdir().unwrap();
        let shard_dir = tempfile::tempdir().unwrap();
        let setting = |out: &std::path::Path| {
            let mut a = args(out, "brsf,usf");
            a.pretrain_examples = 500;
            a.epochs = 1;
            a.test_examples = Some(24);
            a
        };
        run(&setting(whole_dir.path()), &attacks, None).unwrap();
        for i in 1..=3 {
            let shard = RobustnessArgs {
                shard: Some(Shard::new(i, 3).unwrap()),
                ..attacks.clone()
            };
            let text = run(&setting(shard_dir.path()), &shard, None).unwrap();
            assert!(text.contains(&format!("shard {i}/3 saved")), "{text}");
        }
        assert!(!shard_dir.path().join("results.csv").exists());
        let merge = RobustnessArgs {
            merge: true,
            ..attacks.clone()
        };
        run(&setting(shard_dir.path()), &merge, None).unwrap();
        let csv = |d: &tempfile::TempDir| std::fs::read(d.path().join("results.csv")).unwrap();
        assert_eq!(
            csv(&shard_dir),
            csv(&whole_dir),
            "{name}: merged results.csv differs"
        );
        assert!(
            read_csv(&whole_dir.path().join("results.csv"))
                .unwrap()
                .len()
                > 2 * 6
        );

        // Shards of other settings are refused, not merged.
        let other = RobustnessArgs {
            steps: attacks.steps + 1,
            merge: true,
            ..attacks.clone()
        };
        let err = run(&setting(shard_dir.path()), &other, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("other settings"), "{name}: {err}");
    }
}

/// Figure 3 (HAG and SDHA robust mAP, bootstrap intervals) in three shards of its queries
/// (batches of 4: the 24 queries are 6 batches), merged: the unsharded run's `results.csv`
/// byte for byte.
#[test]
fn retrieval_shards_merged_equal_the_unsharded_run() {
    use signsym::study::Shard;
    use signsym::study::paper::{RobustnessArgs, figure3_retrieval_robustness};
    let _serial = crate::serial();
    let attacks = RobustnessArgs {
        epsilons: vec![0.0, 0.1],
        steps: 2,
        autoattack: None,
        attack_batch: 4,
        ..RobustnessArgs::paper()
    };
    let setting = |out: &std::path::Path| {
        let mut a = args(out, "brsf,usf");
        a.pretrain_examples = 400;
        a.epochs = 1;
        a.test_examples = Some(24);
        a.database_examples = Some(200);
        a
    };
    let run = |out: &std::path::Path, attacks: &RobustnessArgs| {
        figure3_retrieval_robustness(&setting(out), attacks, 16, Some(50), None).unwrap()
    };
    let whole = tempfile::tempdir().unwrap();
    let sharded = tempfile::tempdir().unwrap();
    run(whole.path(), &attacks);
    for i in 1..=3 {
        let shard = RobustnessArgs {
            shard: Some(Shard::new(i, 3).unwrap()),
            ..attacks.clone()
        };
        assert!(run(sharded.path(), &shard).contains(&format!("shard {i}/3 saved")));
    }
    let merge = RobustnessArgs {
        merge: true,
        ..attacks.clone()
    };
    run(sharded.path(), &merge);
    let csv = |d: &tempfile::TempDir| std::fs::read(d.path().join("results.csv")).unwrap();
    assert_eq!(csv(&sharded), csv(&whole), "merged results.csv differs");
    let rows = read_csv(&whole.path().join("results.csv")).unwrap();
    // Two rules × HAG, SDHA × feedback, exact × two budgets, each over all 24 queries.
    let robust: Vec<_> = rows.iter().filter(|r| r.metric.is_robust()).collect();
    assert_eq!(robust.len(), 2 * 2 * 2 * 2);
    assert!(robust.iter().all(|r| r.samples == 24));
}
