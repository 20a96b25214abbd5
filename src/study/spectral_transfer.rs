//! Spectral regularization for transfer (arXiv 2405.17181) on the bundled data: a small CNN
//! pre-trained on MNIST with no regularizer, with the hidden-layer spectral penalty (the last
//! layer excluded) over a γ grid, and with the end-to-end penalty (every layer) at the same γ;
//! its head discarded; a new head trained on Fashion-MNIST on the frozen backbone (the paper's
//! setting) and the whole network fine-tuned under each rule. Clean and PGD robust accuracy
//! (exact gradient) against γ, and σ_max of every layer of the pre-trained backbones, test the
//! paper's claim that hidden-only beats end-to-end once the last layer is retrained.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use signsym_feedback::{FeedbackModule, FeedbackRule};
use signsym_losses::SpectralRegularizerConfig;
use signsym_models::SpectralLayers;

use super::datasets::DatasetName;
use super::error::StudyError;
use super::experiments::{
    ExperimentArgs, load, prepare_out, pretrain, short, transfer_rows, write_results,
};
use super::keys::Metric;
use super::output::{ResultRow, text_table};
use super::pipeline::{Method, TermSpec};
use super::plot::{Panel, Series, plot_panels};

/// The settings of [`run`].
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct SpectralArgs {
    /// What every experiment takes (pre-training on MNIST unless `--pretrain-dataset`).
    #[command(flatten)]
    pub common: ExperimentArgs,
    /// Comma-separated γ grid.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.1")]
    pub gammas: Vec<f64>,
}

/// The pre-training methods: none, then hidden-only and end-to-end at each γ.
pub fn pretrainings(args: &SpectralArgs) -> Vec<Method> {
    let mut out = vec![Method::standard("none", FeedbackRule::Bp)];
    for layers in [SpectralLayers::Hidden, SpectralLayers::All] {
        for &gamma in &args.gammas {
            let name = match layers {
                SpectralLayers::Hidden => format!("hidden γ={}", short(gamma)),
                SpectralLayers::All => format!("end-to-end γ={}", short(gamma)),
            };
            let mut m = Method::standard(&name, FeedbackRule::Bp)
                .with_term(TermSpec::Spectral { gamma, layers });
            m.name = name;
            out.push(m);
        }
    }
    out
}

/// Runs (or resumes) the experiment; returns the rows, the summary and the files written.
pub fn run(
    args: &SpectralArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Vec<ResultRow>, String, Vec<PathBuf>), StudyError> {
    let c = &args.common;
    c.validate()?;
    let out = c
        .out
        .clone()
        .unwrap_or_else(|| "out/spectral_transfer".into());
    prepare_out(&out, args)?;
    let data = load(c, c.pretrain_dataset.unwrap_or(DatasetName::Mnist))?;
    let evaluation = c.evaluation();
    let mut rows = Vec::new();
    for method in pretrainings(args) {
        println!("\npre-training: {}", method.name);
        let pretrained = pretrain(c, &data, &method, &out, stop.clone())?;
        // σ_max of the pre-trained layers, before any transfer.
        let mut sigma = SpectralRegularizerConfig::new()
            .with_power_iterations(50)
            .with_skip_last(false)
            .init()?;
        let mut weights = Vec::new();
        pretrained.visit_feedback("", &mut |path, layer| {
            weights.push((path.to_string(), layer.weight_matrix().detach()));
        });
        for (path, w) in weights {
            let s = f64::from(sigma.sigma_max(&path, w).into_scalar::<f32>());
            rows.push(
                ResultRow::clean(
                    "small_cnn",
                    &c.pretrain_dataset.unwrap_or(DatasetName::Mnist).to_string(),
                    "bp",
                    Metric::SigmaMax,
                    s,
                    1,
                )
                .with_setting(&format!("{} / pre-trained", method.name))
                .with_detail(path),
            );
        }
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
    files.extend(plot_panels(
        &panels(args, &rows),
        3,
        &out.join("robust_accuracy_vs_gamma"),
    )?);
    Ok((rows, summary, files))
}

/// The transfer modes of the rows: the probe, then fine-tuning per rule.
fn modes(args: &SpectralArgs) -> Vec<(FeedbackRule, &'static str)> {
    std::iter::once((FeedbackRule::Bp, "probe"))
        .chain(args.common.rules.iter().map(|&r| (r, "fine-tune")))
        .collect()
}

fn find(rows: &[ResultRow], rule: FeedbackRule, setting: &str, metric: Metric) -> Option<f64> {
    rows.iter()
        .find(|r| r.rule == rule.to_string() && r.setting == setting && r.metric == metric)
        .map(|r| r.value)
}

fn summary(args: &SpectralArgs, rows: &[ResultRow]) -> String {
    let mut header = vec![
        "pre-training".to_string(),
        "σ_max per layer (pre-trained)".into(),
    ];
    for (rule, mode) in modes(args) {
        header.push(format!("{mode} {rule}: clean"));
        header.push("robust".into());
    }
    let body: Vec<Vec<String>> = pretrainings(args)
        .iter()
        .map(|m| {
            let sigmas: Vec<String> = rows
                .iter()
                .filter(|r| {
                    r.metric == Metric::SigmaMax && r.setting == format!("{} / pre-trained", m.name)
                })
                .map(|r| format!("{:.2}", r.value))
                .collect();
            let mut line = vec![m.name.clone(), sigmas.join(" ")];
            for (rule, mode) in modes(args) {
                let setting = format!("{} / {mode}", m.name);
                for metric in [Metric::Accuracy, Metric::RobustAccuracy] {
                    line.push(
                        find(rows, rule, &setting, metric)
                            .map_or("-".into(), |v| format!("{v:.3}")),
                    );
                }
            }
            line
        })
        .collect();
    format!(
        "{} → {}: robust accuracy under PGD-{} (exact gradient) at ε = {}\n\n{}",
        args.common.pretrain_dataset.unwrap_or(DatasetName::Mnist),
        args.common.dataset,
        args.common.eval_steps,
        args.common.epsilon,
        text_table(&header, &body)
    )
}

/// Robust accuracy against γ (0: no regularizer) per transfer mode, a line per penalty kind.
fn panels(args: &SpectralArgs, rows: &[ResultRow]) -> Vec<Panel> {
    modes(args)
        .into_iter()
        .map(|(rule, mode)| {
            let series = ["hidden", "end-to-end"]
                .iter()
                .map(|kind| {
                    let mut points = Vec::new();
                    if let Some(v) = find(
                        rows,
                        rule,
                        &format!("none / {mode}"),
                        Metric::RobustAccuracy,
                    ) {
                        points.push((0.0, v));
                    }
                    for &gamma in &args.gammas {
                        let setting = format!("{kind} γ={} / {mode}", short(gamma));
                        if let Some(v) = find(rows, rule, &setting, Metric::RobustAccuracy) {
                            points.push((gamma, v));
                        }
                    }
                    Series {
                        label: kind.to_string(),
                        points,
                    }
                })
                .collect();
            Panel {
                title: format!("{mode} ({rule}), PGD ε = {}", args.common.epsilon),
                x_label: "γ".into(),
                y_label: "robust accuracy".into(),
                series,
            }
        })
        .collect()
}
