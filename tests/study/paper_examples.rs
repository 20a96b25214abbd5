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
