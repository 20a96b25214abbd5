//! The regularizer comparison of arXiv 2405.00679 on the transfer setup of
//! `spectral_transfer`: a small CNN pre-trained on MNIST with no regularizer, L2, the Jacobian
//! penalty and the hidden-layer spectral penalty, then transferred to Fashion-MNIST (a probe on
//! the frozen backbone, fine-tuning per rule). Next to clean and robust accuracy: the Jacobian
//! norm of the representation and the power-law exponent α of its covariance spectrum, with a
//! log–log plot of the spectra beside the data's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use signsym_feedback::FeedbackRule;

use super::datasets::DatasetName;
use super::error::StudyError;
use super::evaluation::Evaluation;
use super::experiments::{
    ExperimentArgs, load, prepare_out, pretrain, transfer_rows, write_results,
};
use super::keys::Metric;
use super::output::{ResultRow, text_table};
use super::pipeline::{Method, feature_spectrum, log_log, pixel_spectrum, regularized_methods};
use super::plot::{Panel, Series, plot_panels};

/// The settings of [`run`].
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct RegularizerArgs {
    /// What every experiment takes (pre-training on MNIST unless `--pretrain-dataset`).
    #[command(flatten)]
    pub common: ExperimentArgs,
    /// λ of the L2 penalty.
    #[arg(long, default_value_t = 1e-3)]
    pub l2: f64,
    /// λ of the Jacobian penalty.
    #[arg(long, default_value_t = 0.05)]
    pub jacobian: f64,
    /// γ of the spectral penalty (hidden layers).
    #[arg(long, default_value_t = 0.01)]
    pub spectral: f64,
}

/// The pre-training methods.
pub fn pretrainings(args: &RegularizerArgs) -> Vec<Method> {
    regularized_methods("none", "", args.l2, args.jacobian, args.spectral)
}

/// Runs (or resumes) the experiment; returns the rows, the summary and the files written.
pub fn run(
    args: &RegularizerArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Vec<ResultRow>, String, Vec<PathBuf>), StudyError> {
    let c = &args.common;
    c.validate()?;
    let out = c
        .out
        .clone()
        .unwrap_or_else(|| "out/regularizer_comparison".into());
    prepare_out(&out, args)?;
    let data = load(c, c.pretrain_dataset.unwrap_or(DatasetName::Mnist))?;
    let evaluation = Evaluation {
        representation: true,
        ..c.evaluation()
    };
    let device = c.device.device()?;
    let all: Vec<usize> = (0..data.attacked.len()).collect();
    let probe_images = data.view.pixels(&data.attacked, &all, &device)?;
    let mut spectra = vec![Series {
        label: "pixels".into(),
        points: log_log(&pixel_spectrum(&probe_images)?),
    }];
    let mut rows = Vec::new();
    for method in pretrainings(args) {
        println!("\npre-training: {}", method.name);
        let pretrained = pretrain(c, &data, &method, &out, stop.clone())?;
        spectra.push(Series {
            label: method.name.clone(),
            points: log_log(&feature_spectrum(&pretrained, &probe_images)?),
        });
        rows.extend(transfer_rows(
            c,
            &data,
            &pretrained,
            &method.name,
            &evaluation,
            &out,
            stop.clone(),
        )?);
    }
    if let Some(notice) = c.sharding().notice(&out) {
        return Ok((rows, notice, Vec::new()));
    }
    let summary = summary(args, &rows);
    println!("\n{summary}");
    let mut files = write_results(&out, args, &rows, &summary)?.to_vec();
    let panel = Panel {
        title: format!(
            "covariance spectra on {} test images (pre-trained features)",
            data.attacked.len()
        ),
        x_label: "log10 rank".into(),
        y_label: "log10 eigenvalue".into(),
        series: spectra,
    };
    files.extend(plot_panels(&[panel], 1, &out.join("spectra"))?);
    Ok((rows, summary, files))
}

fn summary(args: &RegularizerArgs, rows: &[ResultRow]) -> String {
    let header: Vec<String> = [
        "pre-training",
        "transfer",
        "rule",
        "clean acc",
        "robust acc",
        "jacobian norm",
        "α",
        "α fit",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut body = Vec::new();
    let modes = std::iter::once((FeedbackRule::Bp, "probe"))
        .chain(args.common.rules.iter().map(|&r| (r, "fine-tune")))
        .collect::<Vec<_>>();
    for m in pretrainings(args) {
        for &(rule, mode) in &modes {
            let setting = format!("{} / {mode}", m.name);
            let row = |metric| {
                rows.iter().find(|r| {
                    r.rule == rule.to_string() && r.setting == setting && r.metric == metric
                })
            };
            let v = |metric| row(metric).map_or("-".into(), |r| format!("{:.3}", r.value));
            body.push(vec![
                m.name.clone(),
                mode.to_string(),
                rule.to_string(),
                v(Metric::Accuracy),
                v(Metric::RobustAccuracy),
                v(Metric::JacobianNorm),
                v(Metric::PowerLawAlpha),
                row(Metric::PowerLawAlpha).map_or(String::new(), |r| r.detail.clone()),
            ]);
        }
    }
    format!(
        "{} → {}: PGD-{} (exact gradient) at ε = {}; Jacobian norm and α of the transferred network's features\n\n{}",
        args.common.pretrain_dataset.unwrap_or(DatasetName::Mnist),
        args.common.dataset,
        args.common.eval_steps,
        args.common.epsilon,
        text_table(&header, &body)
    )
}
