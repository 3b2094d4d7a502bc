#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Format the Rust code: the driver with the kernel tree's .rustfmt.toml (as
# `make rustfmt` does in-tree), the userspace crates with cargo fmt.
#
#   scripts/fmt.sh KDIR [--check]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=${1:?usage: fmt.sh KDIR [--check]}
check=()
[ "${2:-}" = --check ] && check=(--check)
ksrc=$(readlink -f "$kdir/source")

rustfmt "${check[@]}" --config-path "$ksrc/.rustfmt.toml" --edition 2021 \
	"$NSVM_TOP"/drivers/gpu/drm/nsvm/nsvm_main.rs ||
	die "driver code is not rustfmt-clean: run scripts/fmt.sh KDIR"
(cd "$NSVM_TOP" && cargo fmt --all -- "${check[@]}") ||
	die "userspace code is not rustfmt-clean: run scripts/fmt.sh KDIR"
