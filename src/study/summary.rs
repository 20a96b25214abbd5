//! From result rows to what a reader looks at: robustness panels and terminal tables.

use signsym_attacks::SourceKind;

use super::output::{ResultRow, text_table};
use super::plot::{Panel, Series};

/// The `(attack, source)` pairs of the robustness rows, in order of first appearance.
fn entries(rows: &[ResultRow]) -> Vec<(String, Option<SourceKind>)> {
    let mut out: Vec<(String, Option<SourceKind>)> = Vec::new();
    for r in rows.iter().filter(|r| r.metric.is_robust()) {
        let key = (r.attack.clone(), r.source);
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The rules of `rows`, in order of first appearance.
fn rules(rows: &[ResultRow]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if !out.contains(&r.rule) {
            out.push(r.rule.clone());
        }
    }
    out
}

fn title(attack: &str, source: Option<SourceKind>) -> String {
    match source {
        Some(SourceKind::Decision) => format!("{attack} (decision-based)"),
        Some(SourceKind::Score) => format!("{attack} (score-based)"),
        Some(s) => format!("{attack}, {s} gradient"),
        None => attack.to_string(),
    }
}

/// One panel per attack and gradient source, one line per rule.
pub fn robustness_panels(rows: &[ResultRow]) -> Vec<Panel> {
    entries(rows)
        .into_iter()
        .map(|(attack, source)| {
            let chosen: Vec<&ResultRow> = rows
                .iter()
                .filter(|r| r.attack == attack && r.source == source && r.metric.is_robust())
                .collect();
            let y_label = chosen
                .first()
                .map(|r| {
                    r.metric
                        .to_string()
                        .trim_start_matches("robust_")
                        .replace('_', " ")
                })
                .unwrap_or_default();
            let series = rules(&chosen.iter().map(|r| (*r).clone()).collect::<Vec<_>>())
                .into_iter()
                .map(|rule| Series {
                    points: chosen
                        .iter()
                        .filter(|r| r.rule == rule)
                        .map(|r| (r.epsilon, r.value))
                        .collect(),
                    label: rule,
                })
                .collect();
            Panel {
                x_label: if attack.ends_with("l2") {
                    "ε (L2)".to_string()
                } else {
                    "ε (L∞)".to_string()
                },
                title: title(&attack, source),
                y_label: format!("robust {y_label}"),
                series,
            }
        })
        .collect()
}

/// One table per attack and gradient source: a row per rule, a column per ε.
pub fn robustness_tables(rows: &[ResultRow]) -> String {
    let mut out = String::new();
    for (attack, source) in entries(rows) {
        let chosen: Vec<ResultRow> = rows
            .iter()
            .filter(|r| r.attack == attack && r.source == source && r.metric.is_robust())
            .cloned()
            .collect();
        let mut grid: Vec<f64> = Vec::new();
        for r in &chosen {
            if !grid.contains(&r.epsilon) {
                grid.push(r.epsilon);
            }
        }
        let header: Vec<String> = std::iter::once(format!(
            "{} (n = {})",
            title(&attack, source),
            chosen.first().map_or(0, |r| r.samples)
        ))
        .chain(grid.iter().map(|e| format!("ε={e}")))
        .collect();
        let body: Vec<Vec<String>> = rules(&chosen)
            .into_iter()
            .map(|rule| {
                std::iter::once(rule.clone())
                    .chain(grid.iter().map(|e| {
                        chosen
                            .iter()
                            .find(|r| r.rule == rule && r.epsilon == *e)
                            .map_or("-".into(), |r| format!("{:.3}", r.value))
                    }))
                    .collect()
            })
            .collect();
        out.push_str(&text_table(&header, &body));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::keys::Metric;

    fn row(rule: &str, attack: &str, source: &str, epsilon: f64, value: f64) -> ResultRow {
        let mut row = ResultRow::clean(
            "small_cnn",
            "fashion-mnist",
            rule,
            Metric::Accuracy,
            value,
            10,
        );
        if attack != "none" {
            row.metric = Metric::RobustAccuracy;
            row.attack = attack.into();
            row.source = Some(source.parse().unwrap());
            row.epsilon = epsilon;
        }
        row
    }

    #[test]
    fn panels_group_by_attack_and_source_with_a_line_per_rule() {
        let rows = vec![
            row("bp", "none", "none", 0.0, 0.9),
            row("bp", "fgsm", "feedback", 0.0, 0.9),
            row("bp", "fgsm", "feedback", 0.1, 0.2),
            row("usf", "fgsm", "feedback", 0.0, 0.88),
            row("usf", "fgsm", "feedback", 0.1, 0.6),
            row("usf", "fgsm", "exact", 0.1, 0.3),
        ];
        let panels = robustness_panels(&rows);
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].title, "fgsm, feedback gradient");
        assert_eq!(panels[0].series.len(), 2);
        assert_eq!(panels[0].series[1].points, vec![(0.0, 0.88), (0.1, 0.6)]);
        assert_eq!(panels[1].series[0].label, "usf");
        let tables = robustness_tables(&rows);
        assert!(
            tables
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["usf", "0.880", "0.600"]),
            "{tables}"
        );
        assert!(tables.contains("ε=0.1"));
    }
}
