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

# Every test: unit, real-kernel integration (needs root), then the verifier matrix on the
# default kernels, which ends in its report.
test: setup
	# The static binary the DaemonSet test runs in podman, as the Containerfile builds it.
	$(CARGO) build --release --locked -p tapio-load --bin tapio-load --target x86_64-unknown-linux-musl
	$(CARGO) test --locked --workspace --no-fail-fast
	$(CARGO) xtask verifier-matrix
	# On a real kernel the matrix cached: the runner (power-off, panic, hang) and the harness under
	# faults (a verifier rejection, a panic, a hang, a --kernel-file kernel), each reported as such.
	TAPIO_TEST_KERNEL="$$($(CARGO) xtask vm-images path 6.1)" $(CARGO) test --locked -p verifier-matrix --test boot --test faults

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
	$(CARGO) bench --locked -p tapio-load --bench node_tax
	# Matrix wall time per cached default kernel beside its bare boot (docs/benchmarks-matrix.md).
	$(CARGO) bench --locked -p verifier-matrix --bench matrix_overhead

clean:
	$(CARGO) clean
