#!/usr/bin/env bash
# A GitHub Actions step's shell for the matrix shards: runs the step's script as root (the host row
# loads the bundle into the runner's kernel; ci/setup.sh installs packages) with the environment
# kept and the runner's cargo on PATH, which sudo's secure_path would otherwise drop. The cargo
# directory is the runner's own (CARGO_HOME, else ~/.cargo), read here before sudo.
# Usage (workflow): `shell: bash ci/root-step.sh {0}`.
set -euo pipefail
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
exec sudo --preserve-env env "PATH=$cargo_bin:$PATH" bash --noprofile --norc -eo pipefail "$@"
