//! What a run measured, and its renderings: a terminal/markdown table, CSV, and the sweep's
//! SVG plot (written by hand: axes, polylines, a legend; no plotting dependency).

use std::fmt::Write as _;

use crate::broker::{ApiStages, BrokerDelta, STAGES};
use crate::latency::Percentiles;

/// One workload on one N×M broker.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub workload: String,
    pub network_threads: usize,
    pub io_threads: usize,
    pub records_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second: values for librdkafka, batches for raw.
    pub mb_per_s: f64,
    /// Payload bytes the run moved (0 where not counted).
    pub payload_bytes: f64,
    /// What `latency` measures: "delivery" (librdkafka delivery report), "request" (raw
    /// request → response) or empty.
    pub latency_kind: &'static str,
    pub latency: Percentiles,
    pub end_to_end: Option<Percentiles>,
    pub broker_cpu_s: f64,
    /// `broker_cpu_s` split: user and system (kernel) seconds.
    pub broker_user_s: f64,
    pub broker_sys_s: f64,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
    pub broker: BrokerDelta,
    pub note: String,
}

impl Run {
    pub fn threads(&self) -> String {
        format!("{}×{}", self.network_threads, self.io_threads)
    }

    /// The API that did the work in this run (most requests among Produce / Fetch).
    pub fn main_api(&self) -> Option<&ApiStages> {
        self.broker
            .apis
            .iter()
            .find(|a| a.request == "Produce" || a.request.starts_with("Fetch"))
    }
}

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn lat(p: &Percentiles) -> String {
    if p.samples == 0 {
        "–".into()
    } else {
        format!(
            "{} / {} / {}",
            f(p.p50_ms, 2),
            f(p.p99_ms, 2),
            f(p.p999_ms, 2)
        )
    }
}

/// The main results table (markdown, also readable on a terminal).
pub fn results_table(runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | N×M | records/s | MB/s | latency p50 / p99 / p99.9 ms | e2e p50 / p99 / p99.9 ms \
         | broker CPU s (% of wall) | peak RSS MB | net idle | io idle |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in runs {
        let latency = match r.latency_kind {
            "" => "–".to_string(),
            kind => format!("{} ({kind})", lat(&r.latency)),
        };
        let e2e = r.end_to_end.as_ref().map_or("–".into(), lat);
        let cpu_pct = 100.0 * r.broker_cpu_s / r.wall_s.max(1e-9);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} ({}%) | {} | {} | {} |",
            r.workload,
            r.threads(),
            f(r.records_per_s, 0),
            f(r.mb_per_s, 1),
            latency,
            e2e,
            f(r.broker_cpu_s, 2),
            f(cpu_pct, 0),
            f(r.peak_rss_mb, 0),
            f(r.broker.processor_idle, 2),
            f(r.broker.handler_idle, 2),
        );
    }
    out
}

/// Mean stage times per API (the two busiest APIs of each run).
pub fn stages_table(runs: &[Run]) -> String {
    let mut out = String::from("| workload | N×M | request | requests |");
    for (_, column) in STAGES {
        let _ = write!(out, " {column} |");
    }
    out.push_str(" total p99 ≤ |\n|---|---|---|--:|");
    out.push_str(&"--:|".repeat(STAGES.len() + 1));
    out.push('\n');
    for r in runs {
        for api in r.broker.apis.iter().take(2) {
            let _ = write!(
                out,
                "| {} | {} | {} | {} |",
                r.workload,
                r.threads(),
                api.request,
                api.requests
            );
            for mean in api.mean_ms {
                let _ = write!(out, " {} |", f(mean, 3));
            }
            let _ = writeln!(out, " {} |", f(api.total_p99_le_ms, 2));
        }
    }
    out
}

pub const CSV_HEADER: &str = "workload,network_threads,io_threads,records_per_s,mb_per_s,\
latency_kind,latency_p50_ms,latency_p99_ms,latency_p999_ms,e2e_p50_ms,e2e_p99_ms,e2e_p999_ms,\
broker_cpu_s,wall_s,peak_rss_mb,processor_idle,handler_idle,api,api_requests,\
request_queue_ms,local_ms,remote_ms,response_queue_ms,response_send_ms,total_ms,total_p99_le_ms,note";

pub fn csv(runs: &[Run]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in runs {
        let e2e = r.end_to_end.unwrap_or_default();
        let _ = write!(
            out,
            "{},{},{},{:.1},{:.3},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{:.3},{:.3}",
            r.workload,
            r.network_threads,
            r.io_threads,
            r.records_per_s,
            r.mb_per_s,
            r.latency_kind,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            e2e.p50_ms,
            e2e.p99_ms,
            e2e.p999_ms,
            r.broker_cpu_s,
            r.wall_s,
            r.peak_rss_mb,
            r.broker.processor_idle,
            r.broker.handler_idle,
        );
        match r.main_api() {
            Some(api) => {
                let _ = write!(out, ",{},{}", api.request, api.requests);
                for mean in api.mean_ms {
                    let _ = write!(out, ",{mean:.4}");
                }
                let _ = write!(out, ",{}", api.total_p99_le_ms);
            }
            None => out.push_str(",,,,,,,,,"),
        }
        let _ = writeln!(out, ",\"{}\"", r.note.replace('"', "'"));
    }
    out
}

/// Runs read back from [`csv`] output: the fields the plot uses (workload, N, M,
/// throughput, latency percentiles, note).
pub fn runs_from_csv(text: &str) -> Result<Vec<Run>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(CSV_HEADER) {
        return Err("not a kbroker-bench CSV (header differs)".into());
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let num = |i: usize| -> Result<f64, String> {
                let field = fields.get(i).ok_or(format!("short row: {line}"))?;
                field
                    .parse()
                    .map_err(|_| format!("bad number {field:?} in: {line}"))
            };
            let note_at = CSV_HEADER.split(',').count() - 1;
            Ok(Run {
                workload: fields[0].to_string(),
                network_threads: num(1)? as usize,
                io_threads: num(2)? as usize,
                records_per_s: num(3)?,
                mb_per_s: num(4)?,
                latency: Percentiles {
                    samples: 1,
                    p50_ms: num(6)?,
                    p99_ms: num(7)?,
                    p999_ms: num(8)?,
                    max_ms: f64::NAN,
                },
                note: fields
                    .get(note_at..)
                    .map_or(String::new(), |n| n.join(","))
                    .trim_matches('"')
                    .to_string(),
                ..Run::default()
            })
        })
        .collect()
}

/// One panel of the sweep plot: a value per (N, M).
pub struct Panel<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    /// (N, M, value) points.
    pub points: Vec<(usize, usize, f64)>,
    /// A dashed horizontal line (a target), if any.
    pub target: Option<(f64, &'a str)>,
    /// A logarithmic y axis (latencies that span decades).
    pub log: bool,
}

/// A y axis: linear from 0 to a maximum, or logarithmic between two powers of ten.
#[derive(Debug, Clone, Copy)]
enum Axis {
    Linear(f64),
    Log(f64, f64),
}

impl Axis {
    /// Where `v` sits, 0 (bottom) to 1 (top).
    fn fraction(self, v: f64) -> f64 {
        match self {
            Axis::Linear(max) => (v / max).clamp(0.0, 1.0),
            Axis::Log(low, high) => {
                ((v.max(low).log10() - low.log10()) / (high.log10() - low.log10())).clamp(0.0, 1.0)
            }
        }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Axis::Linear(max) => (0..=4).map(|k| max * k as f64 / 4.0).collect(),
            Axis::Log(low, high) => {
                let mut ticks = Vec::new();
                let mut decade = low;
                while decade <= high * 1.0001 {
                    ticks.push(decade);
                    decade *= 10.0;
                }
                ticks
            }
        }
    }
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum above `v`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// Panels side by side, two per row; x is M (log2 spaced), one line per N.
pub fn svg(title: &str, panels: &[Panel<'_>]) -> String {
    let (panel_w, panel_h) = (440.0, 300.0);
    let (left, right, top, bottom) = (62.0, 16.0, 34.0, 44.0);
    let columns = 2usize;
    let rows = panels.len().div_ceil(columns);
    let width = panel_w * columns as f64;
    let height = 40.0 + panel_h * rows as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>",
        width / 2.0,
        escape_xml(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let ox = panel_w * (i % columns) as f64;
        let oy = 40.0 + panel_h * (i / columns) as f64;
        let (x0, y0) = (ox + left, oy + top);
        let (w, h) = (panel_w - left - right, panel_h - top - bottom);
        let mut ms: Vec<usize> = panel.points.iter().map(|p| p.1).collect();
        ms.sort_unstable();
        ms.dedup();
        let mut ns: Vec<usize> = panel.points.iter().map(|p| p.0).collect();
        ns.sort_unstable();
        ns.dedup();
        let max_value = panel
            .points
            .iter()
            .map(|p| p.2)
            .chain(panel.target.map(|t| t.0))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let min_value = panel
            .points
            .iter()
            .map(|p| p.2)
            .chain(panel.target.map(|t| t.0))
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let axis = if panel.log {
            let low = 10f64.powf(min_value.log10().floor()).min(1.0);
            let high = 10f64.powf(max_value.log10().ceil()).max(low * 10.0);
            Axis::Log(low, high)
        } else {
            Axis::Linear(nice_max(max_value * 1.05))
        };
        let x_of = |m: usize| {
            let k = ms.iter().position(|&v| v == m).unwrap_or(0) as f64;
            x0 + if ms.len() > 1 {
                k * w / (ms.len() - 1) as f64
            } else {
                w / 2.0
            }
        };
        let y_of = |v: f64| y0 + h - axis.fraction(v) * h;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>\n\
             <rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#444\"/>",
            x0 + w / 2.0,
            oy + 20.0,
            escape_xml(panel.title)
        );
        for v in axis.ticks() {
            let y = y_of(v);
            let _ = writeln!(
                out,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 + w,
                x0 - 6.0,
                y + 4.0,
                trim_number(v)
            );
        }
        for &m in &ms {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{m}</text>",
                x_of(m),
                y0 + h + 16.0
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">M = num.io.threads</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>",
            x0 + w / 2.0,
            y0 + h + 34.0,
            ox + 16.0,
            y0 + h / 2.0,
            ox + 16.0,
            y0 + h / 2.0,
            escape_xml(panel.unit)
        );
        if let Some((value, label)) = panel.target {
            let y = y_of(value);
            // The label goes under a line near the top, over it elsewhere.
            let label_y = if axis.fraction(value) > 0.6 {
                y + 14.0
            } else {
                y - 4.0
            };
            let _ = writeln!(
                out,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>\n\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{}</text>",
                x0 + w,
                x0 + w - 4.0,
                label_y,
                escape_xml(label)
            );
        }
        for (k, &n) in ns.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let mut line: Vec<(usize, f64)> = panel
                .points
                .iter()
                .filter(|p| p.0 == n && p.2.is_finite())
                .map(|p| (p.1, p.2))
                .collect();
            line.sort_by_key(|p| p.0);
            let coords: Vec<String> = line
                .iter()
                .map(|&(m, v)| format!("{:.1},{:.1}", x_of(m), y_of(v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                coords.join(" ")
            );
            for &(m, v) in &line {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"><title>N={n} M={m}: {}</title></circle>",
                    x_of(m),
                    y_of(v),
                    trim_number(v)
                );
            }
            let (lx, ly) = (x0 + 8.0 + 70.0 * k as f64, y0 + 14.0);
            let _ = writeln!(
                out,
                "<line x1=\"{lx}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"/>\n\
                 <text x=\"{}\" y=\"{ly}\">N={n}</text>",
                ly - 4.0,
                lx + 18.0,
                ly - 4.0,
                lx + 22.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn trim_number(v: f64) -> String {
    let whole = v >= 1.0 && (v - v.round()).abs() < 1e-9;
    if whole || v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(230.0), 250.0);
        assert_eq!(nice_max(4100.0), 5000.0);
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let axis = Axis::Log(1.0, 1000.0);
        assert_eq!(axis.ticks(), vec![1.0, 10.0, 100.0, 1000.0]);
        assert!((axis.fraction(10.0) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(axis.fraction(0.001), 0.0);
        assert_eq!(Axis::Linear(50.0).fraction(25.0), 0.5);
    }

    #[test]
    fn svg_has_a_line_per_n_and_a_point_per_run() {
        let points = vec![(1, 1, 10.0), (1, 2, 20.0), (2, 1, 15.0), (2, 2, f64::NAN)];
        let panels = [Panel {
            title: "t <1>",
            unit: "MB/s",
            points,
            target: Some((12.0, "target")),
            log: false,
        }];
        let s = svg("sweep", &panels);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 3, "NaN points are left out");
        assert!(s.contains("t &lt;1&gt;") && s.contains("stroke-dasharray"));
    }

    #[test]
    fn csv_rows_have_as_many_fields_as_the_header_and_read_back() {
        let run = Run {
            workload: "w".into(),
            network_threads: 2,
            io_threads: 4,
            mb_per_s: 12.5,
            latency: Percentiles {
                samples: 9,
                p50_ms: 1.0,
                p99_ms: 3.25,
                p999_ms: 4.0,
                max_ms: 5.0,
            },
            note: "a \"b\"".into(),
            ..Run::default()
        };
        let text = csv(&[run]);
        let mut lines = text.lines();
        let header = lines.next().expect("header").split(',').count();
        assert_eq!(lines.next().expect("row").split(',').count(), header);
        let back = runs_from_csv(&text).expect("reads back");
        assert_eq!((back[0].network_threads, back[0].io_threads), (2, 4));
        assert_eq!((back[0].mb_per_s, back[0].latency.p99_ms), (12.5, 3.25));
        assert_eq!(back[0].note, "a 'b'");
    }
}
