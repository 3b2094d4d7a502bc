#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what nsvm needs on a Debian 12 machine, skipping what is there:
# kernel build tools, qemu, busybox, the Rust kernel toolchain (rust-src,
# bindgen-cli, libclang >= 17 from PyPI) and the musl target for the guest's
# static test binaries. Safe to run repeatedly; fast when nothing is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

APT_PKGS="build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils kmod
dwarves python3 python3-pip qemu-system-x86 busybox-static libdrm-dev
pkg-config patch"
BINDGEN_VERSION=0.73.2
LIBCLANG_VERSION=18.1.1

missing=()
for p in $APT_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt: installing ${missing[*]}"
	SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

command -v rustup >/dev/null || die "rustup not found: nsvm needs a rustup toolchain"
rustup component list --installed 2>/dev/null | grep -q '^rust-src' ||
	{ log "rustup: adding rust-src"; rustup component add rust-src >&2; }
rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-linux-musl' ||
	{ log "rustup: adding x86_64-unknown-linux-musl"; rustup target add x86_64-unknown-linux-musl >&2; }

if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
	log "cargo: installing bindgen-cli $BINDGEN_VERSION"
	cargo install --locked bindgen-cli --version "$BINDGEN_VERSION" >&2
fi

if [ -z "$(nsvm_libclang)" ]; then
	log "pip: installing libclang==$LIBCLANG_VERSION"
	python3 -m pip install -q "libclang==$LIBCLANG_VERSION" >&2 ||
		python3 -m pip install -q --break-system-packages "libclang==$LIBCLANG_VERSION" >&2
fi
