# SPDX-License-Identifier: GPL-2.0
#
# nsvm: the two commands of the README, and the pieces they are made of.
#
#   make run      build, boot the guest, load nsvm, run the demo
#   make test     build, boot, run KUnit + the IGT-style suite + hmm-tests
#
# The kernel module itself is built by Kbuild (see ./Kbuild) with
# `make -C $(KDIR) M=$(CURDIR)`; the kernel is built once into a cache
# outside the tree by scripts/kernel.sh.

SHELL := /bin/bash
KDIR_CMD = $(CURDIR)/scripts/kernel.sh

.PHONY: all module kernel setup bindings fmt run test clean help

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

clean:
	-kdir="$$($(KDIR_CMD) kdir 2>/dev/null)" && [ -n "$$kdir" ] && \
		$(MAKE) -C "$$kdir" M=$(CURDIR) clean
	rm -rf out target
