//! JUnit XML: one test suite per run, one test case per assertion.

use std::fmt::Write as _;

use super::{ErrorReport, RunResult, escape};

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
    for w in &r.warnings {
        let _ = writeln!(
            o,
            "      <property name=\"warning\" value=\"{}\"/>",
            escape(w)
        );
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

/// The JUnit XML of a run that could not produce results: one test case, `scenario`, in
/// error (an invalid scenario or a runtime error), so CI systems show why.
pub fn error_junit(r: &ErrorReport) -> String {
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = escape(&format!("ghostmesh-harness.{}", r.scenario));
    let _ = writeln!(
        o,
        "<testsuites name=\"ghostmesh-harness\" tests=\"1\" failures=\"0\" errors=\"1\" time=\"0\">"
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0\">"
    );
    let _ = writeln!(o, "    <properties>");
    let _ = writeln!(
        o,
        "      <property name=\"file\" value=\"{}\"/>",
        escape(&r.file)
    );
    let _ = writeln!(
        o,
        "      <property name=\"exit_code\" value=\"{}\"/>",
        r.exit_code
    );
    let _ = writeln!(o, "    </properties>");
    let _ = writeln!(
        o,
        "    <testcase classname=\"{suite}\" name=\"scenario\" time=\"0\">\n      <error message=\"{}\" type=\"{}\">{}</error>\n    </testcase>",
        escape(&r.errors.first().cloned().unwrap_or_default()),
        escape(&r.error_kind),
        escape(&r.errors.join("\n"))
    );
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}
