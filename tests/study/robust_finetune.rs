//! The main job on a tiny setting: it finishes, writes every output, its CSV parses back to the
//! numbers of its JSON, and a rerun resumes from what is saved instead of recomputing.

use signsym::feedback::FeedbackRule;
use signsym::study::Shard;
use signsym::study::robust_finetune::{
    RobustFinetuneConfig, RobustFinetuneReport, RuleResult, merge, run, run_shard,
};
use signsym::study::{read_csv, read_json};

fn tiny(out: &std::path::Path) -> RobustFinetuneConfig {
    RobustFinetuneConfig::new()
        .with_rules(vec![FeedbackRule::Bp, FeedbackRule::USf])
        .with_pretrain_examples(512)
        .with_train_examples(512)
        .with_test_examples(200)
        .with_attack_examples(24)
        .with_epsilons(vec![0.0, 0.1, 0.3])
        .with_pgd_steps(2)
        .with_hsj_examples(3)
        .with_hsj_queries(150)
        .with_autoattack_examples(8)
        .with_autoattack_steps(3)
        .with_autoattack_targets(2)
        .with_autoattack_queries(30)
        .with_channels([4, 8])
        .with_hidden(16)
        .with_batch_size(32)
        .with_data_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/data").into())
        .with_out(out.to_path_buf())
        .with_progress(false)
}

#[test]
fn tiny_main_job_writes_consistent_outputs_and_resumes() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path());
    let (report, outputs) = run(&config, None).unwrap();

    for path in [
        &outputs.csv,
        &outputs.json,
        &outputs.summary,
        &outputs.plots[0],
        &outputs.plots[1],
    ] {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len > 100, "{} has {len} bytes", path.display());
    }
    // Each rule: 1 clean row + FGSM/PGD × feedback/exact + HopSkipJump + AutoAttack (exact),
    // 3 budgets each.
    assert_eq!(report.rows.len(), 2 * (1 + 6 * 3));
    let csv = read_csv(&outputs.csv).unwrap();
    let json: RobustFinetuneReport = read_json(&outputs.json).unwrap().unwrap();
    assert_eq!(csv, json.rows, "CSV and JSON disagree");
    assert_eq!(json, report);
    assert_eq!(report.machine, signsym::study::Machine::current());

    for rule in &report.rules {
        assert!(
            rule.clean_accuracy > 0.3,
            "{}: clean {}",
            rule.rule,
            rule.clean_accuracy
        );
        assert_eq!(rule.test_examples, 200);
        for entry in &rule.entries {
            let p = &entry.curve.points;
            // ε = 0 is no attack: every gradient entry starts at the attacked subset's clean
            // accuracy (HopSkipJump and AutoAttack run on smaller subsets).
            if entry.source != signsym::attacks::SourceKind::Decision
                && !entry.attack.starts_with("autoattack")
            {
                assert_eq!(
                    p[0].value, rule.entries[0].curve.points[0].value,
                    "{}",
                    entry.attack
                );
            }
            assert!(
                p.windows(2).all(|w| w[1].value <= w[0].value + 1e-12),
                "{}",
                entry.attack
            );
        }
        let pgd_exact = rule
            .entries
            .iter()
            .find(|e| e.attack.starts_with("pgd") && e.attack.ends_with("exact"))
            .unwrap();
        assert!(pgd_exact.curve.points[2].value < pgd_exact.curve.points[0].value);
    }
    // BP's feedback gradient is the exact one.
    assert!((report.rules[0].gradient_cosine - 1.0).abs() < 1e-4);
    assert!(report.rules[1].gradient_cosine < 0.999);
    let summary = std::fs::read_to_string(&outputs.summary).unwrap();
    assert!(
        summary.contains("usf") && summary.contains("clean acc"),
        "{summary}"
    );

    // A rerun loads every finished part: same report, without new checkpoints or rule files.
    let before = std::fs::metadata(dir.path().join("rules/usf.json"))
        .unwrap()
        .modified()
        .unwrap();
    let (again, _) = run(&config, None).unwrap();
    assert_eq!(again, report);
    let after = std::fs::metadata(dir.path().join("rules/usf.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "a finished rule was recomputed");

    // Other settings into the same directory are refused, not mixed.
    let other = tiny(dir.path()).with_seed(1);
    let err = run(&other, None).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn bad_settings_are_typed_errors() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    for config in [
        tiny(dir.path()).with_rules(vec![]),
        tiny(dir.path()).with_epsilons(vec![0.1, 0.05]),
        tiny(dir.path()).with_epsilons(vec![0.0, 1.5]),
        tiny(dir.path()).with_attack_examples(0),
    ] {
        assert!(run(&config, None).is_err());
    }
    let missing = tiny(dir.path()).with_data_dir("/nonexistent".into());
    let err = run(&missing, None).unwrap_err().to_string();
    assert!(err.contains("/nonexistent"), "{err}");
}

#[test]
fn shards_merged_equal_the_unsharded_run() {
    let _serial = crate::serial();
    let whole_dir = tempfile::tempdir().unwrap();
    let shard_dir = tempfile::tempdir().unwrap();
    // brSF redraws its feedback at every backward; batches of 4: the 24 attacked images are 6
    // batches (2 per shard), HopSkipJump's 3 one batch (all in the last shard), AutoAttack's 8
    // two (shards 2 and 3).
    let config = |out: &std::path::Path| {
        tiny(out)
            .with_rules(vec![FeedbackRule::BrSf, FeedbackRule::USf])
            .with_attack_batch(4)
    };
    let (whole, whole_out) = run(&config(whole_dir.path()), None).unwrap();
    for i in 1..=3 {
        let parts = run_shard(&config(shard_dir.path()), Shard::new(i, 3).unwrap(), None).unwrap();
        assert_eq!(parts.len(), 2);
        // Entries: FGSM and PGD × feedback, exact; HopSkipJump; AutoAttack.
        let images = |k: usize| {
            parts[0].evaluation.entries[k]
                .as_ref()
                .map_or(0, |e| e.report.per_sample[0].len())
        };
        assert_eq!(images(0), 8, "shard {i}");
        assert_eq!(images(3), 8, "shard {i}");
        assert_eq!(images(4), if i == 3 { 3 } else { 0 });
        assert_eq!(images(5), if i == 1 { 0 } else { 4 });
        assert_eq!(parts[0].evaluation.cosines.len(), 8);
    }
    // Later shards trained nothing: they loaded the first one's checkpoints.
    let (merged, merged_out) = merge(shard_dir.path()).unwrap();

    assert_eq!(merged.rows, whole.rows);
    assert_eq!(
        std::fs::read(&merged_out.csv).unwrap(),
        std::fs::read(&whole_out.csv).unwrap(),
        "results.csv differs"
    );
    let timeless = |r: &RuleResult| RuleResult {
        train_seconds: 0.0,
        attack_seconds: 0.0,
        ..r.clone()
    };
    for (m, w) in merged.rules.iter().zip(&whole.rules) {
        assert_eq!(timeless(m), timeless(w), "{}", w.rule);
    }
    assert_eq!(merged.pretrain_accuracy, whole.pretrain_accuracy);

    // A missing shard is named, not merged around.
    std::fs::remove_file(shard_dir.path().join("rules/usf.shard-2-of-3.json")).unwrap();
    let err = merge(shard_dir.path()).unwrap_err().to_string();
    assert!(err.contains("usf: 1/3, 3/3"), "{err}");
    assert!(merge(whole_dir.path().join("absent").as_path()).is_err());
}
