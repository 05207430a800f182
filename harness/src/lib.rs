//! ghostmesh-harness: many-peer scenarios from one TOML file, run in a deterministic
//! simulator (`sim`) or live (real tracker, real peers), with terminal, JSON, JUnit and HTML
//! reports. See `harness/README.md` for the scenario file reference.
//!
//! ```no_run
//! use std::path::Path;
//! let sc = ghostmesh_harness::scenario::load(Path::new("scenarios/tour.toml"), None).unwrap();
//! let outcome = ghostmesh_harness::sim::run(&sc, &mut |_| {}).unwrap();
//! println!("{:016x}", outcome.trace_hash);
//! ```

pub mod bench;
pub mod cli;
pub mod container;
pub mod filedata;
pub mod live;
pub mod load;
pub mod payload;
pub mod record;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod units;
