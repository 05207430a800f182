//! The command line: `run`, `validate` and `bench`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that ignores a closed stdout (`| head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use crate::report::{self, RunResult};
use crate::scenario::{self, Backend, Scenario};

/// All assertions passed.
pub const EXIT_PASS: i32 = 0;
/// At least one assertion failed.
pub const EXIT_FAIL: i32 = 1;
/// The scenario file is invalid, or the command line is.
pub const EXIT_INVALID: i32 = 2;
/// The run could not be carried out (IO error, tracker failed to start, nondeterminism, ...).
pub const EXIT_RUNTIME: i32 = 3;

const AFTER_HELP: &str = "\
Exit codes:
  0  every assertion passed (validate: the file is valid)
  1  at least one assertion failed (named in every output)
  2  invalid scenario file (file:line:col, key and what is expected) or bad usage
  3  runtime error (cannot write outputs, tracker did not start, --check-determinism found
     two different traces, ...)
With --json, --junit, --html or --out, exits 2 and 3 still write those files: a report that
names the error (JUnit: one test case \"scenario\" in error), so CI shows why.

Scenario file reference: harness/README.md";

#[derive(Debug, Parser)]
#[command(name = "ghostmesh-harness", version, about = "Runs many-peer ghostmesh scenarios from TOML files, simulated or live.", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Sim,
    Live,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario and check its assertions.
    #[command(after_help = AFTER_HELP)]
    Run {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Backend; overrides the file's `backend` (default sim).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Seed; overrides the file's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// Write the results as JSON here (the resolved scenario goes next to it).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write JUnit XML here (one test case per assertion).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write an HTML report with SVG charts here.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Write results.json, junit.xml, report.html and scenario.resolved.toml into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Sim only: run twice with the same seed and fail (exit 3) if the trace hashes differ.
        #[arg(long)]
        check_determinism: bool,
        /// No progress bar and only the final line of the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a scenario file without running it.
    #[command(after_help = AFTER_HELP)]
    Validate {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Check it for this backend (default: the file's).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Wall time for N simulated peers to discover each other through the tracker core and
    /// each deliver one message.
    Sim {
        /// Peers.
        #[arg(long, default_value_t = 10_000)]
        peers: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Load a WebTorrent tracker (embedded, or --url) on aquatic_ws_load_test's method, or
    /// measure its memory per idle connection (--idle).
    Tracker(Box<crate::load::args::TrackerArgs>),
}

fn backend_of(b: Option<BackendArg>) -> Option<Backend> {
    b.map(|b| match b {
        BackendArg::Sim => Backend::Sim,
        BackendArg::Live => Backend::Live,
    })
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_PASS
            };
        }
    };
    match cli.cmd {
        Cmd::Validate { file, backend } => match scenario::load(&file, backend_of(backend)) {
            Ok(sc) => {
                outln!(
                    "{}: valid ({} peers in {} groups, {} steps, {} assertions, backend {})",
                    file.display(),
                    sc.peer_count(),
                    sc.groups.len(),
                    sc.steps.len(),
                    sc.asserts.len(),
                    sc.backend.as_str()
                );
                if sc.backend == Backend::Live {
                    for w in crate::live::warnings(&sc) {
                        eprintln!("warning: {w}");
                    }
                }
                EXIT_PASS
            }
            Err(errs) => {
                print_errors(&errs);
                EXIT_INVALID
            }
        },
        Cmd::Bench {
            what: BenchCmd::Sim { peers, seed },
        } => match crate::bench::sim(peers, seed) {
            Ok(b) => {
                outln!("{}", b.report);
                if b.passed { EXIT_PASS } else { EXIT_FAIL }
            }
            Err(crate::bench::BenchError::Invalid(e)) => {
                eprintln!("error: {e}");
                EXIT_INVALID
            }
            Err(crate::bench::BenchError::Runtime(e)) => {
                eprintln!("error: {e}");
                EXIT_RUNTIME
            }
        },
        Cmd::Bench {
            what: BenchCmd::Tracker(args),
        } => crate::load::args::main(&args),
        Cmd::Run {
            file,
            backend,
            seed,
            json,
            junit,
            html,
            out,
            check_determinism,
            quiet,
        } => {
            let outputs = Outputs {
                json,
                junit,
                html,
                out,
            };
            let mut sc = match scenario::load(&file, backend_of(backend)) {
                Ok(sc) => sc,
                Err(errs) => {
                    print_errors(&errs);
                    let name = file
                        .file_stem()
                        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
                    let errors = errs.iter().map(ToString::to_string).collect();
                    let report = error_report(&name, &file, None, EXIT_INVALID, errors);
                    write_error_outputs(&report, None, &outputs);
                    return EXIT_INVALID;
                }
            };
            if let Some(s) = seed {
                sc.seed = s;
            }
            if check_determinism && sc.backend != Backend::Sim {
                let e = "--check-determinism needs the sim backend".to_owned();
                eprintln!("error: {e}");
                let report = error_report(&sc.name, &file, Some(&sc), EXIT_INVALID, vec![e]);
                write_error_outputs(&report, Some(&sc), &outputs);
                return EXIT_INVALID;
            }
            run(&sc, check_determinism, quiet, &outputs)
        }
    }
}

fn print_errors(errs: &[scenario::ScenarioError]) {
    for e in errs {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} in the scenario; see harness/README.md for the file format",
        errs.len(),
        if errs.len() == 1 { "" } else { "s" }
    );
}

struct Outputs {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn progress_bar(quiet: bool, label: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stdout().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(1000);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {percent:>3}% {elapsed}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_owned());
    Some(pb)
}

/// Runs `sc` once with its backend; returns the result or a runtime error.
pub fn execute(sc: &Scenario, quiet: bool) -> Result<RunResult, String> {
    let pb = progress_bar(quiet, &format!("{} ({})", sc.name, sc.backend.as_str()));
    let mut progress = |f: f64| {
        if let Some(pb) = &pb {
            pb.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
        }
    };
    let wall = Instant::now();
    let result = match sc.backend {
        Backend::Sim => crate::sim::run(sc, &mut progress).map(|o| {
            RunResult::new(
                sc,
                &o.rec,
                o.end_ns,
                Some(o.trace_hash),
                o.events,
                wall.elapsed().as_secs_f64(),
            )
        }),
        Backend::Live => crate::live::run(sc, &mut progress)
            .map(|o| RunResult::new(sc, &o.rec, o.end_ns, None, 0, wall.elapsed().as_secs_f64())),
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    result
}

fn error_report(
    name: &str,
    file: &Path,
    sc: Option<&Scenario>,
    exit_code: i32,
    errors: Vec<String>,
) -> report::ErrorReport {
    report::ErrorReport {
        scenario: name.to_owned(),
        file: file.display().to_string(),
        backend: sc.map(|s| s.backend.as_str().to_owned()),
        seed: sc.map(|s| s.seed),
        passed: false,
        exit_code,
        error_kind: if exit_code == EXIT_INVALID {
            "invalid_scenario"
        } else {
            "runtime_error"
        }
        .into(),
        errors,
        assertions: Vec::new(),
        failed_assertions: Vec::new(),
    }
}

/// Writes `r` wherever results would have gone; a file that cannot be written is reported,
/// and the exit code stays the one of the original error.
fn write_error_outputs(r: &report::ErrorReport, sc: Option<&Scenario>, o: &Outputs) {
    let resolved = sc.map(Scenario::resolved_toml);
    let go = || -> Result<(), String> {
        if let Some(dir) = &o.out {
            write(&dir.join("results.json"), &r.json())?;
            write(&dir.join("junit.xml"), &report::error_junit(r))?;
            write(&dir.join("report.html"), &report::error_html(r))?;
            if let Some(t) = &resolved {
                write(&dir.join("scenario.resolved.toml"), t)?;
            }
        }
        if let Some(p) = &o.json {
            write(p, &r.json())?;
            if let Some(t) = &resolved {
                write(&p.with_extension("scenario.toml"), t)?;
            }
        }
        if let Some(p) = &o.junit {
            write(p, &report::error_junit(r))?;
        }
        if let Some(p) = &o.html {
            write(p, &report::error_html(r))?;
        }
        Ok(())
    };
    if let Err(e) = go() {
        eprintln!("error: the error report could not be written either: {e}");
    }
}

fn run(sc: &Scenario, check_determinism: bool, quiet: bool, outputs: &Outputs) -> i32 {
    let fail = |e: String| {
        eprintln!("error: {e}");
        let report = error_report(&sc.name, &sc.file, Some(sc), EXIT_RUNTIME, vec![e]);
        write_error_outputs(&report, Some(sc), outputs);
        EXIT_RUNTIME
    };
    let result = match execute(sc, quiet) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if check_determinism {
        match execute(sc, quiet) {
            Ok(second) if second.trace_hash == result.trace_hash => {
                if !quiet {
                    outln!(
                        "determinism: two runs with seed {} gave the same trace hash {}",
                        sc.seed,
                        result.trace_hash.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(second) => {
                return fail(format!(
                    "nondeterminism: seed {} gave trace hashes {} and {}",
                    sc.seed,
                    result.trace_hash.as_deref().unwrap_or("-"),
                    second.trace_hash.as_deref().unwrap_or("-")
                ));
            }
            Err(e) => return fail(e),
        }
    }
    let text = result.terminal();
    if quiet {
        if let Some(last) = text.lines().last() {
            outln!("{last}");
        }
    } else {
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    }
    if let Err(e) = write_outputs(sc, &result, outputs) {
        eprintln!("error: {e}");
        return EXIT_RUNTIME;
    }
    if result.passed { EXIT_PASS } else { EXIT_FAIL }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_outputs(sc: &Scenario, r: &RunResult, o: &Outputs) -> Result<(), String> {
    let resolved = sc.resolved_toml();
    if let Some(dir) = &o.out {
        write(&dir.join("results.json"), &r.json())?;
        write(&dir.join("junit.xml"), &report::junit(r))?;
        write(&dir.join("report.html"), &report::html(r))?;
        write(&dir.join("scenario.resolved.toml"), &resolved)?;
    }
    if let Some(p) = &o.json {
        write(p, &r.json())?;
        write(&p.with_extension("scenario.toml"), &resolved)?;
    }
    if let Some(p) = &o.junit {
        write(p, &report::junit(r))?;
    }
    if let Some(p) = &o.html {
        write(p, &report::html(r))?;
    }
    Ok(())
}
