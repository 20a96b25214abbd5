//! Sy-FAR (arXiv 2509.12939) on the bundled data: a small CNN pre-trained with BP, then
//! fine-tuned under each rule by standard training, PGD adversarial training (Madry's form,
//! exact gradient) and PGD adversarial training with Sy-FAR's symmetry penalty over a λ_sym
//! grid; each evaluated by PGD with the exact gradient for robust accuracy, per-class robust
//! accuracy and the fairness numbers of the adversarial confusion matrix (worst class, mean
//! class, asymmetry `Σ|C_ij − C_ji|`, the largest share of errors into one class).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use signsym_attacks::SourceKind;
use signsym_feedback::FeedbackRule;

use super::error::StudyError;
use super::evaluation::Evaluation;
use super::experiments::{
    ExperimentArgs, evaluation_rows, load, prepare_out, pretrain, short, trained_part,
    write_results,
};
use super::keys::Metric;
use super::output::{ResultRow, text_table};
use super::pipeline::{Method, RowBase, TermSpec, value_of};
use super::plot::{HeatMap, Panel, Series, plot_heatmaps, plot_panels};

/// The settings of [`run`].
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct FairArgs {
    /// What every experiment takes.
    #[command(flatten)]
    pub common: ExperimentArgs,
    /// Comma-separated λ_sym grid of Sy-FAR.
    #[arg(long, value_delimiter = ',', default_value = "0.5,2")]
    pub lambdas: Vec<f64>,
    /// PGD steps of the crafting inside adversarial training.
    #[arg(long, default_value_t = 3)]
    pub train_steps: usize,
}

/// What [`run`] wrote.
#[derive(Clone, Debug)]
pub struct FairOutputs {
    /// Every row.
    pub rows: Vec<ResultRow>,
    /// The terminal table.
    pub summary: String,
    /// `results.csv`, `results.json`, `summary.txt`, then the per-class and heat-map figures
    /// (SVG, PNG each).
    pub files: Vec<PathBuf>,
}

/// The methods: standard, PGD-AT, and PGD-AT + Sy-FAR at each λ, under `rule`.
pub fn methods(args: &FairArgs, rule: FeedbackRule) -> Vec<Method> {
    let adversarial = TermSpec::Adversarial {
        epsilon: args.common.epsilon,
        steps: args.train_steps,
        trades_beta: None,
        source: SourceKind::Exact,
    };
    let at = Method::standard("pgd-at", rule)
        .with_task_weight(0.0)
        .with_term(adversarial);
    let mut out = vec![Method::standard("standard", rule), at.clone()];
    for &lambda in &args.lambdas {
        let mut m = at.clone().with_term(TermSpec::Symmetry { lambda });
        m.name = format!("sy-far λ={}", short(lambda));
        out.push(m);
    }
    out
}

/// Runs (or resumes) the experiment.
pub fn run(args: &FairArgs, stop: Option<Arc<AtomicBool>>) -> Result<FairOutputs, StudyError> {
    args.common.validate()?;
    let c = &args.common;
    let out = c
        .out
        .clone()
        .unwrap_or_else(|| "out/fair_adversarial_training".into());
    prepare_out(&out, args)?;
    let pre_set = c.pretrain_dataset.unwrap_or(c.dataset);
    let data = load(c, pre_set)?;
    println!(
        "BP pre-training on {} {pre_set} images; fine-tuning on {} {} images per method",
        data.pretrain.len(),
        data.train.len(),
        c.dataset
    );
    let start = pretrain(
        c,
        &data,
        &Method::standard("standard", FeedbackRule::Bp),
        &out,
        stop.clone(),
    )?;
    let evaluation = Evaluation {
        fairness: true,
        ..c.evaluation()
    };
    let mut rows = Vec::new();
    for &rule in &c.rules {
        for method in methods(args, rule) {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Err(StudyError::Interrupted { out });
            }
            println!("\n{rule} / {}", method.name);
            let slug = method.slug();
            let base = RowBase {
                backbone: "small_cnn".into(),
                dataset: c.dataset.to_string(),
                rule,
                setting: method.name.clone(),
            };
            rows.extend(evaluation_rows(
                &out,
                &slug,
                c.sharding(),
                &evaluation,
                &base,
                trained_part(
                    &start,
                    &method,
                    &data,
                    &c.training(),
                    &evaluation,
                    &out,
                    stop.clone(),
                ),
            )?);
        }
    }
    if let Some(notice) = c.sharding().notice(&out) {
        return Ok(FairOutputs {
            rows,
            summary: notice,
            files: Vec::new(),
        });
    }
    let summary = summary(args, &rows);
    println!("\n{summary}");
    let mut files = write_results(&out, args, &rows, &summary)?.to_vec();
    files.extend(plot_panels(
        &class_panels(args, &rows),
        c.rules.len().min(2),
        &out.join("per_class_robust_accuracy"),
    )?);
    files.extend(plot_heatmaps(
        &heat_maps(args, &rows),
        3,
        &out.join("asymmetry"),
    )?);
    Ok(FairOutputs {
        rows,
        summary,
        files,
    })
}

fn summary(args: &FairArgs, rows: &[ResultRow]) -> String {
    let eps = Some(args.common.epsilon);
    let header: Vec<String> = [
        "rule",
        "method",
        "clean acc",
        "robust acc",
        "worst class",
        "mean class",
        "asymmetry",
        "max target share",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut body = Vec::new();
    for &rule in &args.common.rules {
        for m in methods(args, rule) {
            let v = |metric, e, detail: &str| {
                value_of(rows, rule, &m.name, metric, e, detail)
                    .map_or("-".into(), |v| format!("{v:.3}"))
            };
            let detail_of = |metric| {
                rows.iter()
                    .find(|r| {
                        r.rule == rule.to_string() && r.setting == m.name && r.metric == metric
                    })
                    .map(|r| r.detail.clone())
                    .unwrap_or_default()
            };
            body.push(vec![
                rule.to_string(),
                m.name.clone(),
                v(Metric::Accuracy, None, ""),
                v(Metric::RobustAccuracy, eps, ""),
                format!(
                    "{} ({})",
                    v(
                        Metric::WorstClassRobustAccuracy,
                        eps,
                        &detail_of(Metric::WorstClassRobustAccuracy)
                    ),
                    detail_of(Metric::WorstClassRobustAccuracy)
                ),
                v(Metric::MeanClassRobustAccuracy, eps, ""),
                v(Metric::Asymmetry, eps, ""),
                format!(
                    "{} ({})",
                    v(
                        Metric::MaxTargetShare,
                        eps,
                        &detail_of(Metric::MaxTargetShare)
                    ),
                    detail_of(Metric::MaxTargetShare)
                ),
            ]);
        }
    }
    let n = rows
        .iter()
        .find(|r| r.metric == Metric::RobustAccuracy)
        .map_or(0, |r| r.samples);
    format!(
        "{}: PGD-{} (exact gradient) at ε = {} on {n} test images; clean accuracy on {}\n\n{}",
        args.common.dataset,
        args.common.eval_steps,
        args.common.epsilon,
        rows.iter()
            .find(|r| r.metric == Metric::Accuracy)
            .map_or(0, |r| r.samples),
        text_table(&header, &body)
    )
}

/// Per-class robust accuracy: a panel per rule, a line per method.
fn class_panels(args: &FairArgs, rows: &[ResultRow]) -> Vec<Panel> {
    args.common
        .rules
        .iter()
        .map(|&rule| Panel {
            title: format!(
                "{rule}: per-class robust accuracy (PGD, ε = {})",
                args.common.epsilon
            ),
            x_label: "class".into(),
            y_label: "robust accuracy".into(),
            series: methods(args, rule)
                .into_iter()
                .map(|m| Series {
                    points: rows
                        .iter()
                        .filter(|r| {
                            r.rule == rule.to_string()
                                && r.setting == m.name
                                && r.metric == Metric::ClassRobustAccuracy
                        })
                        .filter_map(|r| {
                            let c: f64 = r.detail.trim_start_matches("class ").parse().ok()?;
                            Some((c, r.value))
                        })
                        .collect(),
                    label: m.name,
                })
                .collect(),
        })
        .collect()
}

/// The asymmetry matrix `|C_ij − C_ji|` of each rule's adversarial training and best Sy-FAR.
fn heat_maps(args: &FairArgs, rows: &[ResultRow]) -> Vec<HeatMap> {
    let mut maps = Vec::new();
    for &rule in &args.common.rules {
        for m in methods(args, rule).into_iter().skip(1) {
            let pairs: Vec<(usize, usize, f64)> = rows
                .iter()
                .filter(|r| {
                    r.rule == rule.to_string()
                        && r.setting == m.name
                        && r.metric == Metric::Asymmetry
                })
                .filter_map(|r| {
                    let mut it = r.detail.strip_prefix("pair ")?.split(' ');
                    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, r.value))
                })
                .collect();
            let size = pairs.iter().map(|p| p.0.max(p.1) + 1).max().unwrap_or(0);
            if size == 0 {
                continue;
            }
            let mut values = vec![0.0; size * size];
            for (i, j, v) in pairs {
                values[i * size + j] = v;
            }
            maps.push(HeatMap {
                title: format!("{rule} / {}: |C_ij − C_ji|", m.name),
                axes: ["true class i".into(), "predicted class j".into()],
                values,
                size,
            });
        }
    }
    maps
}
