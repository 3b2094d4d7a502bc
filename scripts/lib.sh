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

# The Debian mirror this machine's apt already uses (deb822 .sources or a
# one-line sources.list), so the private configuration goes where the host's
# does; security mirrors carry no backports.
host_mirror() {
	{
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | grep -v -e security -e '^$' | head -n 1
}

apt_refresh() {
	mkdir -p "$NSVM_APT_DIR/lists/partial" "$NSVM_APT_DIR/cache/archives/partial"
	local mirror
	mirror=${NSVM_DEBIAN_MIRROR:-$(host_mirror)}
	[ -n "$mirror" ] || die "no Debian mirror in the host's apt sources: set NSVM_DEBIAN_MIRROR"
	# trixie-backports and sid: the kernel; trixie: Debian 13's glibc and
	# libdrm for nsvm_c_trixie; sid: glibc and igt-gpu-tools for gputop.
	cat >"$NSVM_APT_DIR/sources.list.new" <<-SRC
	deb $mirror trixie-backports main
	deb $mirror trixie main
	deb $mirror sid main
	SRC
	local stamp=$NSVM_APT_DIR/lists/.updated
	if ! cmp -s "$NSVM_APT_DIR/sources.list.new" "$NSVM_APT_DIR/sources.list"; then
		mv "$NSVM_APT_DIR/sources.list.new" "$NSVM_APT_DIR/sources.list"
		rm -f "$stamp"
	fi
	rm -f "$NSVM_APT_DIR/sources.list.new"
	# Refresh at most once a day: a warm run needs no network.
	if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
		mapfile -t opts < <(nsvm_apt_opts)
		apt-get "${opts[@]}" -q update >&2 && touch "$stamp"
	fi
}

# Downloads package $2 of suite $1 (once: cached) and prints the .deb's path.
nsvm_fetch_deb() {
	local suite=$1 pkg=$2 dir=$NSVM_CACHE/debs/$1 deb
	deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" 2>/dev/null | head -n 1)
	if [ -z "$deb" ]; then
		apt_refresh
		mkdir -p "$dir"
		mapfile -t opts < <(nsvm_apt_opts)
		(cd "$dir" && apt-get "${opts[@]}" -q download "$pkg/$suite" >&2) ||
			die "cannot download $pkg from $suite"
		deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
	fi
	echo "$deb"
}
