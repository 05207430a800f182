//! JUnit XML: one test suite per run, one test case per assertion.

use std::fmt::Write as _;

use super::{RunResult, escape};

/// The JUnit XML document of a run.
pub fn junit(r: &RunResult) -> String {
    let failures = r.assertions.iter().filter(|a| !a.passed).count();
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = escape(&format!("ghostmesh-harness.{}", r.scenario));
    let _ = writeln!(
        o,
        "<testsuites name=\"ghostmesh-harness\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
        r.assertions.len(),
        r.wall_secs
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\">",
        r.assertions.len(),
        r.wall_secs
    );
    let _ = writeln!(o, "    <properties>");
    for (k, v) in [
        ("backend", r.backend.clone()),
        ("seed", r.seed.to_string()),
        ("file", r.file.clone()),
        ("trace_hash", r.trace_hash.clone().unwrap_or_default()),
    ] {
        let _ = writeln!(o, "      <property name=\"{k}\" value=\"{}\"/>", escape(&v));
    }
    let _ = writeln!(o, "    </properties>");
    for a in &r.assertions {
        let _ = write!(
            o,
            "    <testcase classname=\"{suite}\" name=\"{}\" time=\"0\"",
            escape(&a.name)
        );
        if a.passed {
            o.push_str("/>\n");
        } else {
            let _ = writeln!(
                o,
                ">\n      <failure message=\"{}: expected {}; got {}\" type=\"{}\">assertion {} failed: expected {}; got {}</failure>\n    </testcase>",
                escape(&a.name),
                escape(&a.expected),
                escape(&a.actual),
                escape(&a.kind),
                escape(&a.name),
                escape(&a.expected),
                escape(&a.actual)
            );
        }
    }
    let _ = writeln!(o, "    <system-out>{}</system-out>", escape(&r.terminal()));
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}
