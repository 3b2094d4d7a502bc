# SPDX-License-Identifier: GPL-2.0
# Shared settings for the nsvm scripts; sourced, never run.
#
# Everything expensive (the Debian kernel source, the kernel build, the
# rootfs tools) lives in a cache outside the repository, keyed so that a warm
# run reuses it and a change of kernel revision, config fragment or toolchain
# does not.

NSVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NSVM_CACHE=${NSVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsvm}
NSVM_KPKG=linux-source-7.3
NSVM_JOBS=${NSVM_JOBS:-$(nproc)}

export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[nsvm] %s\n' "$*" >&2; }
die() { printf '[nsvm] error: %s\n' "$*" >&2; exit 1; }

# libclang >= 17 comes from PyPI's libclang wheel (Debian 12 has 16).
nsvm_libclang() {
	python3 - <<'PY' 2>/dev/null
import os, clang
print(os.path.join(os.path.dirname(clang.__file__), "native"))
PY
}
if [ -z "${LIBCLANG_PATH:-}" ]; then
	LIBCLANG_PATH=$(nsvm_libclang || true)
	export LIBCLANG_PATH
fi

# A private apt configuration: the host's sources stay untouched.
NSVM_APT_DIR=$NSVM_CACHE/apt
nsvm_apt_opts() {
	printf '%s\n' \
		-o "Dir::Etc::SourceList=$NSVM_APT_DIR/sources.list" \
		-o "Dir::Etc::SourceParts=/dev/null" \
		-o "Dir::State::Lists=$NSVM_APT_DIR/lists" \
		-o "Dir::State::status=/dev/null" \
		-o "Dir::Cache=$NSVM_APT_DIR/cache" \
		-o "Debug::NoLocking=1" \
		-o "APT::Sandbox::User=root"
}
