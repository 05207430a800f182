//! A self-contained HTML report with inline SVG charts.

use std::fmt::Write as _;

use super::{ErrorReport, RunResult, escape};
use crate::units::format_rate;

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn axis(o: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{}</title>\
         <line x1=\"{PAD}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{y0}\" stroke=\"#333\"/>\
         <text x=\"{xm}\" y=\"{yl}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{ym}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 12 {ym})\">{}</text>\
         <text x=\"{xm}\" y=\"16\" font-size=\"13\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
        escape(title),
        escape(x_label),
        escape(y_label),
        escape(title),
        y0 = H - PAD,
        x1 = W - 10.0,
        xm = W / 2.0,
        yl = H - 8.0,
        ym = H / 2.0,
    );
}

fn bars(
    values: &[(f64, f64)],
    x_label: &str,
    y_label: &str,
    title: &str,
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let mut o = String::new();
    axis(&mut o, title, x_label, y_label);
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9);
    let n = values.len().max(1) as f64;
    let bw = (W - PAD - 10.0) / n;
    for (i, (x, y)) in values.iter().enumerate() {
        let h = (y / max) * (H - 2.0 * PAD);
        let _ = write!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7bd0\"><title>{:.3}: {}</title></rect>",
            PAD + i as f64 * bw + 1.0,
            H - PAD - h,
            (bw - 2.0).max(1.0),
            h,
            x,
            fmt(*y)
        );
    }
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        let _ = write!(
            o,
            "<text x=\"{PAD}\" y=\"{}\" font-size=\"10\">{:.2}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{:.2}</text><text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>",
            H - PAD + 12.0,
            first.0,
            W - 10.0,
            H - PAD + 12.0,
            last.0,
            PAD + 2.0,
            PAD - 4.0,
            escape(&fmt(max))
        );
    }
    o.push_str("</svg>");
    o
}

fn lines(r: &RunResult) -> String {
    let pts = &r.charts.delivery_over_time;
    let mut o = String::new();
    axis(
        &mut o,
        "Messages over time (sent: grey, delivered: blue)",
        "time (s)",
        "messages",
    );
    let max_y = pts.iter().map(|p| p.1.max(p.2)).max().unwrap_or(1).max(1) as f64;
    let max_x = pts.last().map_or(1.0, |p| p.0).max(1e-9);
    let map = |x: f64, y: f64| {
        (
            PAD + x / max_x * (W - PAD - 10.0),
            H - PAD - y / max_y * (H - 2.0 * PAD),
        )
    };
    for (color, pick) in [("#999", 1usize), ("#4a7bd0", 2usize)] {
        let mut d = String::new();
        for (i, p) in pts.iter().enumerate() {
            let y = if pick == 1 { p.1 } else { p.2 } as f64;
            let (x, y) = map(p.0, y);
            let _ = write!(d, "{}{x:.1},{y:.1} ", if i == 0 { "M" } else { "L" });
        }
        let _ = write!(
            o,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>"
        );
    }
    let _ = write!(
        o,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\">{max_y}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{max_x:.1} s</text></svg>",
        PAD + 2.0,
        PAD - 4.0,
        W - 10.0,
        H - PAD + 12.0
    );
    o
}

/// The HTML report of a run.
pub fn html(r: &RunResult) -> String {
    let mut o = String::new();
    let status = if r.passed { "PASSED" } else { "FAILED" };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — {status}</title>\
         <style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.pass{{color:#070}}.fail{{color:#b00;font-weight:bold}}</style></head><body>\n",
        escape(&r.scenario)
    );
    let _ = writeln!(
        o,
        "<h1>{} <span class=\"{}\">{status}</span></h1><p>{}</p>",
        escape(&r.scenario),
        if r.passed { "pass" } else { "fail" },
        escape(&r.description)
    );
    let s = &r.summary;
    let _ = writeln!(
        o,
        "<table><tr><th>file</th><td>{}</td></tr><tr><th>backend</th><td>{}</td></tr><tr><th>seed</th><td>{}</td></tr>\
         <tr><th>trace hash</th><td>{}</td></tr><tr><th>scenario time</th><td>{:.1} s (wall {:.2} s)</td></tr>\
         <tr><th>peers / joins / links</th><td>{} / {} / {}</td></tr>\
         <tr><th>messages</th><td>{} sent, {} delivered ({:.2}%), {} failed</td></tr>\
         <tr><th>latency</th><td>p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms</td></tr>\
         <tr><th>bytes</th><td>links {}, tracker {}</td></tr>",
        escape(&r.file),
        escape(&r.backend),
        r.seed,
        escape(r.trace_hash.as_deref().unwrap_or("-")),
        r.run_secs,
        r.wall_secs,
        s.peers,
        s.joins,
        s.links_formed,
        s.messages_sent,
        s.messages_delivered,
        s.delivery_ratio * 100.0,
        s.messages_failed,
        s.latency.p50_ms,
        s.latency.p95_ms,
        s.latency.p99_ms,
        s.latency.max_ms,
        s.link_bytes,
        s.tracker_bytes
    );
    if s.files_sent > 0 {
        let _ = writeln!(
            o,
            "<tr><th>files</th><td>{} sent, {} complete and intact, {} over the fast path</td></tr>",
            s.files_sent, s.files_complete, s.files_fast
        );
    }
    if s.routed_sent > 0 {
        let _ = writeln!(
            o,
            "<tr><th>routed</th><td>{} sent, {} delivered, {} answered; relays forwarded {}, dropped {}</td></tr>",
            s.routed_sent,
            s.routed_delivered,
            s.routed_answered,
            s.relay_forwarded,
            s.relay_dropped
        );
    }
    o.push_str("</table>\n");
    if !r.warnings.is_empty() {
        let _ = writeln!(o, "<h2>Warnings ({} backend)</h2><ul>", escape(&r.backend));
        for w in &r.warnings {
            let _ = writeln!(o, "<li class=\"warn\">{}</li>", escape(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("<h2>Assertions</h2><table><tr><th>result</th><th>assertion</th><th>expected</th><th>actual</th></tr>\n");
    for a in &r.assertions {
        let _ = writeln!(
            o,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if a.passed { "pass" } else { "fail" },
            if a.passed { "PASS" } else { "FAIL" },
            escape(&a.name),
            escape(&a.expected),
            escape(&a.actual)
        );
    }
    o.push_str("</table>\n<h2>Charts</h2>\n");
    let hist: Vec<(f64, f64)> = r
        .charts
        .latency_histogram
        .iter()
        .map(|(x, n)| (*x, *n as f64))
        .collect();
    o.push_str(&bars(
        &hist,
        "latency upper bound (ms)",
        "messages",
        "Latency histogram",
        &|v| format!("{v:.0}"),
    ));
    o.push('\n');
    o.push_str(&lines(r));
    o.push('\n');
    o.push_str(&bars(
        &r.charts.throughput,
        "time (s)",
        "payload bytes/s",
        "Delivered throughput",
        &|v| format_rate(v),
    ));
    o.push_str("\n</body></html>\n");
    o
}

/// The HTML page of a run that could not produce results (invalid scenario, runtime error).
pub fn error_html(r: &ErrorReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — ERROR</title>\
         <style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}.fail{{color:#b00;font-weight:bold}}</style></head><body>\n\
         <h1>{} <span class=\"fail\">ERROR</span></h1><p>{} (exit {}) in {}</p><ul>",
        escape(&r.scenario),
        escape(&r.scenario),
        escape(&r.error_kind.replace('_', " ")),
        r.exit_code,
        escape(&r.file)
    );
    for e in &r.errors {
        let _ = writeln!(o, "<li><code>{}</code></li>", escape(e));
    }
    o.push_str("</ul>\n</body></html>\n");
    o
}
