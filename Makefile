# tapio-probes: the entry points a platform engineer runs. Every target sets the machine up first
# (ci/setup.sh is a no-op once everything is installed).

SHELL := /bin/bash
# bpftool and libbpf-tools install under /usr/sbin, which non-login shells may not have on PATH.
export PATH := $(PATH):/usr/sbin:/sbin
CARGO ?= cargo

.PHONY: setup build test matrix bench clean

setup:
	bash ci/setup.sh

build: setup
	$(CARGO) build --release --locked -p tapio-load

# Every test: unit, real-kernel integration (needs root), the harness's own tests on the cached 6.1
# kernel (the runner: power-off, panic, hang; the harness under faults: a verifier rejection, a
# panic, a hang, a --kernel-file kernel, each reported as such), then the verifier matrix on the
# default kernels, which ends in its report, then the same matrix split into the CI workflow's
# shards and merged, which must judge as that run did. A test may skip only for a fact of the running kernel
# (TAPIO_STRICT_SKIPS); every skip is listed at the end (TAPIO_SKIP_LOG).
SKIP_LOG := $(CURDIR)/target/test-skips.txt
test: setup
	# The static binary the DaemonSet test runs in podman, as the Containerfile builds it.
	$(CARGO) build --release --locked -p tapio-load --bin tapio-load --target x86_64-unknown-linux-musl
	@mkdir -p target && rm -f $(SKIP_LOG)
	# Lints first, so a warning fails in seconds rather than after the tests. It reuses `cargo
	# check` artifacts, not the test builds: on a warm tree 0.5 s unchanged, 2 s after a change to
	# the agent, 71 s after one to tapio-kernel-gates (everything above it re-checked), measured on
	# 2 busy cores; about 3 min the first time, when no check artifacts exist yet.
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	TAPIO_TEST_KERNEL="$$($(CARGO) xtask vm-images path 6.1)" TAPIO_STRICT_SKIPS=1 TAPIO_SKIP_LOG=$(SKIP_LOG) \
		$(CARGO) test --locked --workspace --no-fail-fast
	# The stored snapshots as cargo-insta checks them: none pending, none unreferenced (a variant for
	# a kernel the matrix does not run), every one in the exact form and metadata the matrix writes.
	$(CARGO) insta test --require-full-match --unreferenced=reject -p tapio-snapshots -p verifier-matrix \
		--lib --test snapshots_stored --test snapshot_review
	$(CARGO) xtask verifier-matrix --out target/verifier-matrix
	# The CI workflow's shard command lines on the same default matrix, side by side (one core
	# each), merged with its merge command line: the verdicts must be the run's above, whose report
	# the test reads rather than running the whole matrix again (issue 18).
	TAPIO_MATRIX_REPORT=$(CURDIR)/target/verifier-matrix/report.json TAPIO_STRICT_SKIPS=1 TAPIO_SKIP_LOG=$(SKIP_LOG) \
		$(CARGO) test --locked -p verifier-matrix --test workflow -- --ignored --exact sharded_default_matrix_judges_as_one_run --nocapture
	@echo "Tests skipped (each for a fact of this kernel):"; cat $(SKIP_LOG) 2>/dev/null || echo "  none"

# The main job: boot each default kernel in QEMU, prove the bundle on it, print the report.
matrix: setup
	$(CARGO) xtask verifier-matrix

# Kernel cost beside execsnoop, DNS/network cost, decode throughput, delivery latency per policy
# and memory (needs root for the kernel figures: it sets kernel.bpf_stats_enabled for the run and
# restores it). Prints `BENCH ...` lines and writes docs/benchmarks.md and target/bench/results.json.
bench: setup
	@test "$$(id -u)" = 0 || echo "make bench: not root: only the user-space figures will be measured"
	# One bench at a time, in this order: node_tax (last) reads the kernel-cost and delivery
	# results the others wrote and puts the node-tax table into docs/benchmarks.md.
	$(CARGO) bench --locked -p tapio-load --bench kernel_cost
	$(CARGO) bench --locked -p tapio-load --bench xdp_cost
	$(CARGO) bench --locked -p tapio-load --bench advanced
	$(CARGO) bench --locked -p tapio-load --bench ring_decode
	$(CARGO) bench --locked -p tapio-load --bench delivery
	# What container and pod attribution adds per event, and its memory per 10,000 containers.
	$(CARGO) bench --locked -p tapio-load --bench attribution
	$(CARGO) bench --locked -p tapio-load --bench node_tax
	# Matrix wall time per cached default kernel beside its bare boot (docs/benchmarks-matrix.md).
	$(CARGO) bench --locked -p verifier-matrix --bench matrix_overhead

clean:
	$(CARGO) clean
