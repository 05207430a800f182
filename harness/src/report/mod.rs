//! Results of a run and their outputs: terminal summary, JSON, JUnit XML, HTML with SVG charts.

mod html;
mod junit;

use std::fmt::Write as _;

use serde::Serialize;

use crate::record::{AssertionResult, Charts, Recorder, Summary};
use crate::scenario::Scenario;

pub use html::{error_html, html};
pub use junit::{error_junit, junit};

/// A run that produced no results: an invalid scenario (exit 2) or a runtime error (exit 3).
/// With `--json`, `--junit`, `--html` or `--out`, it is written in place of the results so CI
/// shows the reason.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// The scenario's name (the file's stem when the file could not be read).
    pub scenario: String,
    pub file: String,
    /// `None` when the file was not valid.
    pub backend: Option<String>,
    pub seed: Option<u64>,
    pub passed: bool,
    /// 2: invalid scenario, 3: runtime error.
    pub exit_code: i32,
    /// `"invalid_scenario"` or `"runtime_error"`.
    pub error_kind: String,
    /// One line per error (`file:line:col: key `k`: ...` for an invalid scenario).
    pub errors: Vec<String>,
    pub assertions: Vec<AssertionResult>,
    pub failed_assertions: Vec<String>,
}

impl ErrorReport {
    /// The JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A one-line summary.
    pub fn headline(&self) -> String {
        format!(
            "{}: {} (exit {}): {}",
            self.scenario,
            self.error_kind.replace('_', " "),
            self.exit_code,
            self.errors.join("; ")
        )
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub description: String,
    pub file: String,
    pub backend: String,
    pub seed: u64,
    /// Sim only: FNV-1a 64 of the event trace, 16 hex digits.
    pub trace_hash: Option<String>,
    pub events: u64,
    /// Length of the run in scenario time (virtual in sim, real in live), seconds.
    pub run_secs: f64,
    pub wall_secs: f64,
    pub passed: bool,
    pub failed_assertions: Vec<String>,
    /// What the backend did not apply or could not measure as the scenario says (e.g. live:
    /// a `[[link]]` between WebRTC groups, a restart of an external tracker).
    pub warnings: Vec<String>,
    pub summary: Summary,
    pub assertions: Vec<AssertionResult>,
    pub charts: Charts,
}

impl RunResult {
    /// Builds the result from what a backend recorded.
    pub fn new(
        sc: &Scenario,
        rec: &Recorder,
        end_ns: u64,
        trace_hash: Option<u64>,
        events: u64,
        wall_secs: f64,
    ) -> Self {
        let assertions = rec.evaluate(sc, end_ns);
        let failed: Vec<String> = assertions
            .iter()
            .filter(|a| !a.passed)
            .map(|a| a.name.clone())
            .collect();
        RunResult {
            scenario: sc.name.clone(),
            description: sc.description.clone(),
            file: sc.file.display().to_string(),
            backend: sc.backend.as_str().into(),
            seed: sc.seed,
            trace_hash: trace_hash.map(|h| format!("{h:016x}")),
            events,
            run_secs: end_ns as f64 / 1e9,
            wall_secs,
            passed: failed.is_empty(),
            failed_assertions: failed,
            warnings: rec.warnings.clone(),
            summary: rec.summary(sc),
            assertions,
            charts: rec.charts(end_ns),
        }
    }

    /// The JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The terminal summary.
    pub fn terminal(&self) -> String {
        let s = &self.summary;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scenario {} ({} backend, seed {}){}",
            self.scenario,
            self.backend,
            self.seed,
            self.trace_hash
                .as_ref()
                .map(|h| format!(", trace {h}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "  ran {:.1} s of scenario time in {:.2} s{}",
            self.run_secs,
            self.wall_secs,
            if self.events > 0 {
                format!(" ({} events)", self.events)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "  peers {}  joins {}  links formed {}  tracker restarts {}",
            s.peers, s.joins, s.links_formed, s.tracker_restarts
        );
        let _ = writeln!(
            o,
            "  messages {} sent, {} delivered ({:.2}%), {} failed",
            s.messages_sent,
            s.messages_delivered,
            s.delivery_ratio * 100.0,
            s.messages_failed
        );
        let _ = writeln!(
            o,
            "  latency p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            s.latency.p50_ms, s.latency.p95_ms, s.latency.p99_ms, s.latency.max_ms
        );
        let _ = writeln!(
            o,
            "  bytes: links {} in {} frames, tracker {} in {} frames",
            s.link_bytes, s.link_frames, s.tracker_bytes, s.tracker_frames
        );
        if s.files_sent > 0 {
            let _ = writeln!(
                o,
                "  files {} sent, {} complete and intact ({} over the fast path)",
                s.files_sent, s.files_complete, s.files_fast
            );
        }
        if s.routed_sent > 0 {
            let _ = writeln!(
                o,
                "  routed {} sent, {} delivered, {} answered; relays forwarded {}, dropped {}",
                s.routed_sent,
                s.routed_delivered,
                s.routed_answered,
                s.relay_forwarded,
                s.relay_dropped
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o, "warnings ({} backend):", self.backend);
            for w in &self.warnings {
                let _ = writeln!(o, "  [WARN] {w}");
            }
        }
        let _ = writeln!(o, "assertions:");
        for a in &self.assertions {
            let _ = writeln!(
                o,
                "  [{}] {}: expected {}; got {}",
                if a.passed { "PASS" } else { "FAIL" },
                a.name,
                a.expected,
                a.actual
            );
        }
        let _ = writeln!(
            o,
            "{}: {} of {} assertions passed{}",
            if self.passed { "PASSED" } else { "FAILED" },
            self.assertions.iter().filter(|a| a.passed).count(),
            self.assertions.len(),
            if self.passed {
                String::new()
            } else {
                format!(" (failed: {})", self.failed_assertions.join(", "))
            }
        );
        o
    }
}

/// Escapes text for XML and HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}
