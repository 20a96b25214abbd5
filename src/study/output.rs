//! Results as files: one long-format row per number (CSV and JSON carry the same rows), atomic
//! writes, and a plain-text table for the terminal.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use signsym_attacks::SourceKind;
use signsym_metrics::RobustnessCurve;

use super::keys::{Metric, source_key};

use super::error::{StudyError, io};

/// One measured number with everything that identifies it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The backbone (`small_cnn`, `resnet18`, …).
    pub backbone: String,
    /// The data set the number was measured on.
    pub dataset: String,
    /// The fine-tuning rule (`bp`, `usf`, …).
    pub rule: String,
    /// The training method beyond the rule (`standard`, `pgd-at`, `sy-far λ=0.5`, …; empty
    /// where the study trains one way).
    #[serde(default)]
    pub setting: String,
    /// What the value is.
    pub metric: Metric,
    /// The attack (`none` for clean numbers).
    pub attack: String,
    /// Where the attack's gradient came from (`none` for clean numbers).
    #[serde(with = "source_key")]
    pub source: Option<SourceKind>,
    /// The budget ε (0 for clean numbers; the noise's norm for noise accuracy).
    pub epsilon: f64,
    /// What the row is about within the metric (a class, a layer), or empty.
    #[serde(default)]
    pub detail: String,
    /// The number.
    pub value: f64,
    /// How many samples (images or queries) it averages.
    pub samples: usize,
    /// Lower end of its 95 % interval (Wilson for accuracies, bootstrap for robust mAP; none
    /// where no interval applies).
    pub ci_low: Option<f64>,
    /// Upper end of its 95 % interval.
    pub ci_high: Option<f64>,
}

/// What identifies a row: everything but the value and its interval.
pub type RowKey = (
    String,
    String,
    String,
    String,
    Metric,
    String,
    Option<SourceKind>,
    u64,
    String,
);

impl ResultRow {
    /// A clean number of `samples` images or queries, with a Wilson interval when it is an
    /// accuracy.
    pub fn clean(
        backbone: &str,
        dataset: &str,
        rule: &str,
        metric: Metric,
        value: f64,
        samples: usize,
    ) -> Self {
        let interval = matches!(metric, Metric::Accuracy | Metric::ExactMatch)
            .then(|| {
                signsym_metrics::wilson_interval(
                    (value * samples as f64).round() as usize,
                    samples,
                    0.95,
                )
                .ok()
            })
            .flatten();
        Self {
            backbone: backbone.into(),
            dataset: dataset.into(),
            rule: rule.into(),
            setting: String::new(),
            metric,
            attack: "none".into(),
            source: None,
            epsilon: 0.0,
            detail: String::new(),
            value,
            samples,
            ci_low: interval.map(|i| i.0),
            ci_high: interval.map(|i| i.1),
        }
    }

    /// This row for a training method (`setting`).
    pub fn with_setting(mut self, setting: &str) -> Self {
        self.setting = setting.into();
        self
    }

    /// This row about a class or layer (`detail`).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The row's identity, for merging runs into one table.
    pub fn key(&self) -> RowKey {
        (
            self.backbone.clone(),
            self.dataset.clone(),
            self.rule.clone(),
            self.setting.clone(),
            self.metric,
            self.attack.clone(),
            self.source,
            self.epsilon.to_bits(),
            self.detail.clone(),
        )
    }

    /// The rows of one robustness curve.
    pub fn from_curve(
        curve: &RobustnessCurve,
        backbone: &str,
        dataset: &str,
        rule: &str,
        attack: &str,
        source: SourceKind,
    ) -> Vec<Self> {
        let metric = match curve.metric {
            signsym_metrics::RobustMetric::Accuracy => Metric::RobustAccuracy,
            signsym_metrics::RobustMetric::MapAtK(k) => Metric::RobustMapAtK(k),
        };
        curve
            .points
            .iter()
            .map(|p| Self {
                backbone: backbone.into(),
                dataset: dataset.into(),
                rule: rule.into(),
                setting: String::new(),
                metric,
                attack: attack.into(),
                source: Some(source),
                epsilon: p.epsilon,
                detail: String::new(),
                value: p.value,
                samples: p.samples,
                ci_low: Some(p.ci_low),
                ci_high: Some(p.ci_high),
            })
            .collect()
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a resumed
/// run) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StudyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    signsym_models::atomic_write(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| e.to_string())
    })
    .map_err(|e| StudyError::Format {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Serialises `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StudyError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| StudyError::Format {
        path: path.into(),
        message: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

/// Reads JSON written by [`write_json`]; `Ok(None)` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StudyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StudyError::Format {
                path: path.into(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes rows as CSV (a header, then one line per row), atomically.
pub fn write_csv(path: &Path, rows: &[ResultRow]) -> Result<(), StudyError> {
    let format = |e: csv::Error| StudyError::Format {
        path: path.into(),
        message: e.to_string(),
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(format)?;
    }
    let bytes = writer.into_inner().map_err(|e| StudyError::Format {
        path: path.into(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Reads rows written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<ResultRow>, StudyError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| StudyError::Format {
        path: path.into(),
        message: e.to_string(),
    })?;
    reader
        .deserialize()
        .collect::<Result<Vec<ResultRow>, _>>()
        .map_err(|e| StudyError::Format {
            path: path.into(),
            message: e.to_string(),
        })
}

/// A plain-text table with right-aligned columns (the first left-aligned).
pub fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                let _ = write!(out, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, header);
    let rule: usize = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for row in rows {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64) -> ResultRow {
        let mut row = ResultRow::clean(
            "small_cnn",
            "fashion-mnist",
            "usf",
            Metric::RobustAccuracy,
            value,
            250,
        )
        .with_setting("sy-far λ=0.5")
        .with_detail("class 3");
        row.attack = "pgd-5".into();
        row.source = Some(SourceKind::Exact);
        row.epsilon = 0.1;
        row.ci_low = Some(value * 0.9);
        row.ci_high = None;
        row
    }

    #[test]
    fn csv_round_trips_every_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let rows = vec![row(0.1 + 0.2), row(1.0 / 3.0), row(0.0)];
        write_csv(&path, &rows).unwrap();
        assert_eq!(read_csv(&path).unwrap(), rows);
        assert!(!dir.path().join("r.csv.partial").exists());
    }

    #[test]
    fn corrupt_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = read_json::<Vec<ResultRow>>(&path).unwrap_err().to_string();
        assert!(err.contains("x.json"), "{err}");
        assert!(
            read_json::<Vec<ResultRow>>(&dir.path().join("missing.json"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = text_table(
            &["rule".into(), "acc".into()],
            &[
                vec!["bp".into(), "0.9".into()],
                vec!["brsf".into(), "0.875".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "rule    acc");
        assert_eq!(lines[2], "bp      0.9");
        assert_eq!(lines[3], "brsf  0.875");
    }
}

/// What a result depends on beyond the settings: `gemm` picks its matrix kernels by the CPU's
/// vector features and Flex splits work by thread count, so the same seed can give different
/// numbers on another machine. Every results file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// The vector features the kernels choose between (x86-64: sse4.2, avx, avx2, fma, avx512f).
    pub vector_features: Vec<String>,
    /// Threads available (`RAYON_NUM_THREADS` when set, else the available parallelism).
    pub threads: usize,
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}], {} threads",
            self.arch,
            self.vector_features.join(", "),
            self.threads
        )
    }
}

impl Machine {
    /// This machine.
    pub fn current() -> Self {
        #[allow(unused_mut)]
        let mut features: Vec<String> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        for (name, on) in [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if on {
                features.push(name.to_string());
            }
        }
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        Self {
            arch: std::env::consts::ARCH.to_string(),
            vector_features: features,
            threads,
        }
    }
}
