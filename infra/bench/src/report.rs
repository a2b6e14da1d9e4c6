//! Samples → figures → tables (Markdown, for the terminal and `BENCHMARKS.md`) and JSON
//! (for the baseline comparison).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};

use crate::stub::CallCounts;

/// Everything measured for one variant (one function in one language).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VariantFigures {
    /// `ingress` or `consumer` (what the variant does), or the function's name.
    pub function: String,
    /// `junction` (Rust), `node`, `python`, `python-powertools`.
    pub runtime: String,
    pub init_ms: Percentiles,
    pub init_cpu_ms: Percentiles,
    pub first_ms: Percentiles,
    pub warm_ms: Percentiles,
    pub warm_cpu_ms: Percentiles,
    pub peak_rss_kib: u64,
    pub binary_bytes: Option<u64>,
    pub zip_bytes: Option<u64>,
    /// AWS calls per event in the warm runs (per SQS record for the consumer), by
    /// `service:Operation`.
    pub calls_per_event: BTreeMap<String, f64>,
    /// AWS calls made during one init plus its first invocation, by `service:Operation`.
    pub calls_cold: BTreeMap<String, f64>,
    pub cold_samples: usize,
    pub warm_samples: usize,
    /// Invocations that answered with an error or an unexpected status (should be 0).
    pub failures: usize,
}

/// p50/p90/p99 of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; all zero for no samples.
    pub fn of(samples: &[Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut sorted: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
        }
    }
}

/// Calls per event: `counts` divided by `events`.
pub fn per_event(counts: &CallCounts, events: usize) -> BTreeMap<String, f64> {
    counts
        .iter()
        .map(|(operation, count)| (operation.clone(), *count as f64 / events.max(1) as f64))
        .collect()
}

/// A whole run: when, where, what.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    pub date: String,
    pub machine: String,
    pub toolchain: String,
    pub command: String,
    pub variants: Vec<VariantFigures>,
}

impl Run {
    fn find(&self, function: &str, runtime: &str) -> Option<&VariantFigures> {
        self.variants
            .iter()
            .find(|v| v.function == function && v.runtime == runtime)
    }

    /// Each reference with the Junction variant of the same function: the pairs the
    /// ratios are of.
    fn comparisons(&self) -> impl Iterator<Item = (&VariantFigures, &VariantFigures)> {
        ["ingress", "consumer"]
            .into_iter()
            .flat_map(move |function| {
                let junction = self.find(function, "junction");
                self.variants
                    .iter()
                    .filter(move |v| v.function == function && v.runtime != "junction")
                    .filter_map(move |reference| Some((junction?, reference)))
            })
    }

    /// The ratio tables (Junction ÷ each reference), then one table per function.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Ratios: Junction ÷ reference (lower is better)\n");
        let _ = writeln!(
            out,
            "| function | reference | init p50 | init CPU p50 | first invocation p50 | warm p50 | warm CPU p50 | peak RSS | zip |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for (junction, reference) in self.comparisons() {
            let ratio = |a: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.3}", a / b)
                } else {
                    "–".into()
                }
            };
            let zip = match (junction.zip_bytes, reference.zip_bytes) {
                (Some(a), Some(b)) => ratio(a as f64, b as f64),
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {zip} |",
                reference.function,
                reference.runtime,
                ratio(junction.init_ms.p50, reference.init_ms.p50),
                ratio(junction.init_cpu_ms.p50, reference.init_cpu_ms.p50),
                ratio(junction.first_ms.p50, reference.first_ms.p50),
                ratio(junction.warm_ms.p50, reference.warm_ms.p50),
                ratio(junction.warm_cpu_ms.p50, reference.warm_cpu_ms.p50),
                ratio(junction.peak_rss_kib as f64, reference.peak_rss_kib as f64),
            );
        }
        let _ = writeln!(out, "\n## Figures\n");
        let _ = writeln!(
            out,
            "| function | runtime | init p50 / p90 ms | init CPU p50 ms | first inv. p50 ms | warm p50 / p99 ms | warm CPU p50 / p99 ms | peak RSS MiB | binary | zip | samples cold / warm | failures |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for v in &self.variants {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} / {:.2} | {:.2} | {:.2} | {:.3} / {:.3} | {:.3} / {:.3} | {:.1} | {} | {} | {} / {} | {} |",
                v.function,
                v.runtime,
                v.init_ms.p50,
                v.init_ms.p90,
                v.init_cpu_ms.p50,
                v.first_ms.p50,
                v.warm_ms.p50,
                v.warm_ms.p99,
                v.warm_cpu_ms.p50,
                v.warm_cpu_ms.p99,
                v.peak_rss_kib as f64 / 1024.0,
                bytes(v.binary_bytes),
                bytes(v.zip_bytes),
                v.cold_samples,
                v.warm_samples,
                v.failures,
            );
        }
        let _ = writeln!(
            out,
            "\n## AWS calls per event (warm; per SQS record for the consumer)\n"
        );
        let _ = writeln!(
            out,
            "| function | runtime | per event | init + first invocation |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for v in &self.variants {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                v.function,
                v.runtime,
                calls(&v.calls_per_event),
                calls(&v.calls_cold)
            );
        }
        out
    }

    /// Figures that got more than `threshold` (0.2 = 20%) worse than in `baseline`:
    /// reported, never failed on.
    pub fn regressions(&self, baseline: &Run, threshold: f64) -> Vec<String> {
        let mut found = Vec::new();
        for now in &self.variants {
            let Some(before) = baseline.find(&now.function, &now.runtime) else {
                continue;
            };
            let figures = [
                ("init p50 ms", before.init_ms.p50, now.init_ms.p50),
                (
                    "init CPU p50 ms",
                    before.init_cpu_ms.p50,
                    now.init_cpu_ms.p50,
                ),
                ("warm p50 ms", before.warm_ms.p50, now.warm_ms.p50),
                (
                    "warm CPU p50 ms",
                    before.warm_cpu_ms.p50,
                    now.warm_cpu_ms.p50,
                ),
                (
                    "peak RSS KiB",
                    before.peak_rss_kib as f64,
                    now.peak_rss_kib as f64,
                ),
                (
                    "zip bytes",
                    before.zip_bytes.unwrap_or(0) as f64,
                    now.zip_bytes.unwrap_or(0) as f64,
                ),
                (
                    "AWS calls per event",
                    before.calls_per_event.values().sum(),
                    now.calls_per_event.values().sum(),
                ),
            ];
            for (name, before, now_value) in figures {
                if before > 0.0 && now_value > before * (1.0 + threshold) {
                    found.push(format!(
                        "{} {}: {name} {before:.3} → {now_value:.3} (+{:.0}%)",
                        now.function,
                        now.runtime,
                        (now_value / before - 1.0) * 100.0
                    ));
                }
            }
        }
        found
    }

    /// Junction ÷ reference ratios that got more than `threshold` worse than in
    /// `baseline`. The absolute figures drift with the machine (every variant alike);
    /// a ratio measured in one interleaved run does not, so this is the comparison to
    /// trust when [`Run::regressions`] flags everything at once.
    pub fn ratio_regressions(&self, baseline: &Run, threshold: f64) -> Vec<String> {
        let mut found = Vec::new();
        for (junction, reference) in self.comparisons() {
            let (Some(junction_before), Some(reference_before)) = (
                baseline.find(&junction.function, "junction"),
                baseline.find(&reference.function, &reference.runtime),
            ) else {
                continue;
            };
            let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
            let figures = [
                (
                    "init p50",
                    ratio(junction_before.init_ms.p50, reference_before.init_ms.p50),
                    ratio(junction.init_ms.p50, reference.init_ms.p50),
                ),
                (
                    "warm p50",
                    ratio(junction_before.warm_ms.p50, reference_before.warm_ms.p50),
                    ratio(junction.warm_ms.p50, reference.warm_ms.p50),
                ),
                (
                    "warm CPU p50",
                    ratio(
                        junction_before.warm_cpu_ms.p50,
                        reference_before.warm_cpu_ms.p50,
                    ),
                    ratio(junction.warm_cpu_ms.p50, reference.warm_cpu_ms.p50),
                ),
            ];
            for (name, before, now) in figures {
                if let (Some(before), Some(now)) = (before, now)
                    && before > 0.0
                    && now > before * (1.0 + threshold)
                {
                    found.push(format!(
                        "{} junction ÷ {}: {name} {before:.3} → {now:.3} (+{:.0}%)",
                        reference.function,
                        reference.runtime,
                        (now / before - 1.0) * 100.0
                    ));
                }
            }
        }
        found
    }
}

fn bytes(value: Option<u64>) -> String {
    match value {
        Some(bytes) if bytes >= 1024 * 1024 => format!("{:.2} MB", bytes as f64 / 1_048_576.0),
        Some(bytes) => format!("{:.1} KB", bytes as f64 / 1024.0),
        None => "–".into(),
    }
}

fn calls(counts: &BTreeMap<String, f64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(operation, count)| format!("{operation} {count:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let one = Percentiles::of(&[Duration::from_millis(3)]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
    }

    #[test]
    fn regressions_over_the_threshold_are_named() {
        let figures = |warm_cpu: f64| VariantFigures {
            function: "ingress".into(),
            runtime: "junction".into(),
            warm_cpu_ms: Percentiles {
                p50: warm_cpu,
                p90: warm_cpu,
                p99: warm_cpu,
            },
            ..VariantFigures::default()
        };
        let run = |warm_cpu| Run {
            variants: vec![figures(warm_cpu)],
            ..Run::default()
        };
        assert!(run(1.1).regressions(&run(1.0), 0.2).is_empty());
        let found = run(1.5).regressions(&run(1.0), 0.2);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("warm CPU p50 ms"), "{found:?}");
    }

    #[test]
    fn a_ratio_regression_is_named_and_machine_drift_is_not() {
        let variant = |runtime: &str, warm_cpu: f64| VariantFigures {
            function: "ingress".into(),
            runtime: runtime.into(),
            warm_cpu_ms: Percentiles {
                p50: warm_cpu,
                p90: warm_cpu,
                p99: warm_cpu,
            },
            ..VariantFigures::default()
        };
        let run = |junction: f64, node: f64| Run {
            variants: vec![variant("junction", junction), variant("node", node)],
            ..Run::default()
        };
        let baseline = run(0.4, 2.0);
        // Everything 40% slower: the machine, not the code.
        let drift = run(0.56, 2.8);
        assert!(!drift.regressions(&baseline, 0.2).is_empty());
        assert!(drift.ratio_regressions(&baseline, 0.2).is_empty());
        // Junction alone 50% slower.
        let found = run(0.6, 2.0).ratio_regressions(&baseline, 0.2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("ingress junction ÷ node: warm CPU p50 0.200 → 0.300"),
            "{found:?}"
        );
    }
}
