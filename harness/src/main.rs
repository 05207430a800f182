//! `ghostmesh-harness`: see `ghostmesh-harness --help`.

fn main() {
    std::process::exit(ghostmesh_harness::cli::main());
}
