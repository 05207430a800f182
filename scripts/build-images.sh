#!/usr/bin/env bash
# Builds the statically linked tracker (and harness) binaries and the FROM-scratch images:
#   ghostmesh-tracker:latest   the tracker (Dockerfile)
#   ghostmesh-harness:latest   the scenario runner with scenarios/ (harness/Dockerfile)
# Nothing is pulled: both images start FROM scratch.
#
#   scripts/build-images.sh            # both images
#   scripts/build-images.sh tracker    # the tracker image only
#   scripts/build-images.sh --if-docker  # both, or a loud notice and success when no Docker
#                                        # engine answers (fails instead when CI is set)
#
# Environment: TAG (default latest), CARGO_TARGET_DIR (default target).
set -euo pipefail
cd "$(dirname "$0")/.."

if_docker=false
if [[ "${1:-}" == --if-docker ]]; then if_docker=true; shift; fi
what="${1:-all}"
tag="${TAG:-latest}"
target_dir="${CARGO_TARGET_DIR:-target}"
triple="x86_64-unknown-linux-gnu"
# crt-static links glibc statically. --target keeps RUSTFLAGS off build scripts and proc macros.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"

no_docker() {
    if $if_docker && [[ -z "${CI:-}" ]]; then
        echo "SKIPPED building images: $1. Container tests will say SKIPPED too." >&2
        exit 0
    fi
    echo "$1" >&2
    exit 1
}
command -v docker >/dev/null || no_docker "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || no_docker "no Docker engine answers (start dockerd)"

build() { # crate, binary, context dir
    cargo build --release --locked --target "$triple" -p "$1"
    rm -rf "$3" && mkdir -p "$3"
    # Debug line tables stay in target/; the image gets the stripped binary.
    strip -o "$3/$2" "$target_dir/$triple/release/$2"
    # A static binary has no interpreter; refuse to ship a dynamic one into scratch.
    if command -v file >/dev/null && ! file "$3/$2" | grep -q "static"; then
        echo "$2 is not statically linked" >&2; exit 1
    fi
}

if [[ "$what" == all || "$what" == tracker ]]; then
    ctx="$target_dir/docker/tracker"
    build ghostmesh-tracker ghostmesh-tracker "$ctx"
    DOCKER_BUILDKIT=0 docker build -q -f Dockerfile -t "ghostmesh-tracker:$tag" "$ctx" >/dev/null
    echo "ghostmesh-tracker:$tag $(docker image inspect -f '{{.Size}}' "ghostmesh-tracker:$tag") bytes"
fi
if [[ "$what" == all || "$what" == harness ]]; then
    ctx="$target_dir/docker/harness"
    build ghostmesh-harness ghostmesh-harness "$ctx"
    cp -r scenarios deploy "$ctx/"
    DOCKER_BUILDKIT=0 docker build -q -f harness/Dockerfile -t "ghostmesh-harness:$tag" "$ctx" >/dev/null
    echo "ghostmesh-harness:$tag $(docker image inspect -f '{{.Size}}' "ghostmesh-harness:$tag") bytes"
fi
