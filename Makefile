# SPDX-License-Identifier: GPL-2.0
#
# nsvm: the two commands of the README, and the pieces they are made of.
#
#   make run      build, boot the guest, load nsvm, run the compute demo
#                 (NSVM_DEMO_MIB: size of each array, default 32)
#   make test     build, boot, run KUnit + the IGT-style suite + hmm-tests
#   make stress   nsvm_stress at full length: 100000 fuzzed ioctls, 120 s of
#                 threaded stress (NSVM_FUZZ_CALLS, NSVM_STRESS_SECS,
#                 NSVM_INJECT_ROUNDS, NSVM_SEED override); make test runs a
#                 short version
#   make bench    the benchmark kernel (no debug options): nsvm, test_hmm
#                 and memcpy side by side, 1 MiB to 1 GiB; out/bench.txt,
#                 out/bench.json, out/bench.svg (NSVM_BENCH=sections,
#                 NSVM_BENCH_MAX_MB, NSVM_BENCH_THREADS)
#
# The kernel module itself is built by Kbuild (see ./Kbuild) with
# `make -C $(KDIR) M=$(CURDIR)`; the kernel is built once into a cache
# outside the tree by scripts/kernel.sh.

SHELL := /bin/bash
KDIR_CMD = $(CURDIR)/scripts/kernel.sh

.PHONY: all module kernel setup bindings fmt run test stress bench clean help

all: module

help:
	@sed -n 's/^#   //p' Makefile

setup:
	scripts/setup-host.sh

kernel: setup
	$(KDIR_CMD) build

module: kernel
	$(MAKE) -C "$$($(KDIR_CMD) kdir)" M=$(CURDIR) modules

# Regenerate the Rust bindings of the uapi header and the mm shim.
bindings: kernel
	scripts/gen-bindings.sh "$$($(KDIR_CMD) kdir)"

# Format the driver (kernel .rustfmt.toml) and the userspace crates.
fmt: kernel
	scripts/fmt.sh "$$($(KDIR_CMD) kdir)"

run:
	scripts/vm.sh run

test:
	scripts/vm.sh test

stress:
	NSVM_IGT=nsvm_stress NSVM_HMM=0 \
	NSVM_FUZZ_CALLS=$${NSVM_FUZZ_CALLS:-100000} \
	NSVM_STRESS_SECS=$${NSVM_STRESS_SECS:-120} \
	NSVM_INJECT_ROUNDS=$${NSVM_INJECT_ROUNDS:-3000} \
	NSVM_TIMEOUT=$${NSVM_TIMEOUT:-3000} \
	scripts/vm.sh test

bench:
	scripts/vm.sh bench

clean:
	-kdir="$$($(KDIR_CMD) kdir 2>/dev/null)" && [ -n "$$kdir" ] && \
		$(MAKE) -C "$$kdir" M=$(CURDIR) clean
	rm -rf out target
