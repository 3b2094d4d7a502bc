#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch, configure and build the nsvm test kernel from Debian's
# linux-source-7.3 package.
#
#   scripts/kernel.sh build     build (or reuse) and print KDIR
#   scripts/kernel.sh kdir      print KDIR of an existing build
#   scripts/kernel.sh version   print the Debian package version
#
# NSVM_KCONFIG picks the kernel: "test" (default) is tinyconfig plus
# scripts/kernel/test.config, with lockdep, KFENCE, kmemleak, DEBUG_VM and
# fault injection; "bench" adds scripts/kernel/bench.config on top, which
# turns the debug options off (they distort the benchmark's ratios).
#
# A build whose Rust bindings lay a struct out other than C does fails
# (scripts/kernel/check-bindgen-layout.sh).
#
# The kernel carries the patches of scripts/kernel/patches (git
# format-patch files, applied in name order to a copy of the pristine
# source: $NSVM_CACHE/src/<package>-<version>-<patches' hash>).
#
# The build directory is $NSVM_CACHE/build/<version>-<key>, where key hashes
# the config fragments, the patches and the toolchain versions: a warm run
# finds it and does not rebuild, and the two kernels are cached side by
# side.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

case ${NSVM_KCONFIG:-test} in
test) FRAGMENTS=("$NSVM_TOP/scripts/kernel/test.config") ;;
bench) FRAGMENTS=("$NSVM_TOP/scripts/kernel/test.config" "$NSVM_TOP/scripts/kernel/bench.config") ;;
*) die "NSVM_KCONFIG must be test or bench" ;;
esac

# The newest 7.3 revision the archive carries; old ones get dropped, so the
# exact version goes into every log and into the cache key.
pkg_version() {
	apt_refresh
	mapfile -t opts < <(nsvm_apt_opts)
	apt-cache "${opts[@]}" madison "$NSVM_KPKG" | awk '{print $3}' |
		sort -V | tail -n 1
}

fetch_source() {
	local ver=$1 src=$NSVM_CACHE/src/$NSVM_KPKG-$ver
	if [ -f "$src/.nsvm-extracted" ]; then
		echo "$src"
		return
	fi
	log "fetching $NSVM_KPKG $ver"
	local tmp
	tmp=$(mktemp -d "$NSVM_CACHE/tmp.XXXXXX")
	mapfile -t opts < <(nsvm_apt_opts)
	(cd "$tmp" && apt-get "${opts[@]}" -q download "$NSVM_KPKG=$ver" >&2)
	dpkg-deb -x "$tmp"/"$NSVM_KPKG"_*.deb "$tmp/deb"
	rm -rf "$src" && mkdir -p "$src"
	tar -xaf "$tmp"/deb/usr/src/"$NSVM_KPKG".tar.* -C "$src" --strip-components=1
	rm -rf "$tmp"
	touch "$src/.nsvm-extracted"
	echo "$src"
}

PATCHES=("$NSVM_TOP"/scripts/kernel/patches/*.patch)
[ -e "${PATCHES[0]}" ] || PATCHES=()

# The source with the patches applied: a hard-linked copy of the pristine
# tree, in which each file a patch touches is copied before it is patched.
patched_source() {
	local ver=$1 pristine src key tmp p f
	pristine=$(fetch_source "$ver")
	if [ ${#PATCHES[@]} = 0 ]; then
		echo "$pristine"
		return
	fi
	key=$(cat "${PATCHES[@]}" | sha256sum | cut -c1-12)
	src=$NSVM_CACHE/src/$NSVM_KPKG-$ver-$key
	if [ -f "$src/.nsvm-patched" ]; then
		echo "$src"
		return
	fi
	log "applying ${#PATCHES[@]} kernel patch(es) to $NSVM_KPKG $ver"
	tmp=$(mktemp -d "$NSVM_CACHE/tmp.XXXXXX")
	cp -al "$pristine/." "$tmp/"
	for p in "${PATCHES[@]}"; do
		while read -r f; do
			[ -f "$tmp/$f" ] || continue
			cp "$tmp/$f" "$tmp/$f.nsvm" && mv "$tmp/$f.nsvm" "$tmp/$f"
		done < <(sed -n 's|^+++ b/||p' "$p")
		patch -s -p1 -N -d "$tmp" <"$p" >&2 || die "kernel patch $(basename "$p") does not apply"
	done
	rm -rf "$src" && mv "$tmp" "$src"
	touch "$src/.nsvm-patched"
	echo "$src"
}

cache_key() {
	{
		cat "${FRAGMENTS[@]}" "$NSVM_TOP/scripts/kernel/check-bindgen-layout.sh"
		[ ${#PATCHES[@]} = 0 ] || cat "${PATCHES[@]}"
		rustc --version
		bindgen --version
		gcc --version | head -n 1
	} | sha256sum | cut -c1-12
}

build_dir() {
	echo "$NSVM_CACHE/build/$1-$(cache_key)"
}

configure() {
	local src=$1 out=$2
	make -s -C "$src" O="$out" tinyconfig >&2
	"$src"/scripts/kconfig/merge_config.sh -m -O "$out" "$out/.config" "${FRAGMENTS[@]}" >/dev/null
	make -s -C "$src" O="$out" olddefconfig >&2
	# Every line must survive olddefconfig, unless a later fragment sets
	# the same symbol.
	local missing=0 line sym i j later
	for ((i = 0; i < ${#FRAGMENTS[@]}; i++)); do
		while read -r line; do
			case $line in
			CONFIG_*=*) sym=${line%%=*} ;;
			"# CONFIG_"*" is not set") sym=${line#\# } sym=${sym%% *} ;;
			*) continue ;;
			esac
			later=0
			for ((j = i + 1; j < ${#FRAGMENTS[@]}; j++)); do
				grep -qE "^($sym=|# $sym is not set)" "${FRAGMENTS[j]}" && later=1
			done
			[ $later = 0 ] || continue
			case $line in
			CONFIG_*) grep -qx -- "$line" "$out/.config" ;;
			*) ! grep -q "^$sym=" "$out/.config" ;;
			esac || {
				log "config: $line did not survive olddefconfig"
				missing=1
			}
		done <"${FRAGMENTS[i]}"
	done
	[ $missing = 0 ] || die "config fragments not satisfiable (see above)"
}

build() {
	command -v rustc >/dev/null || die "rustc not found: run scripts/setup-host.sh"
	local ver src out
	ver=$(pkg_version)
	[ -n "$ver" ] || die "no $NSVM_KPKG in the archive"
	out=$(build_dir "$ver")
	if [ -f "$out/.nsvm-built" ]; then
		log "kernel: $NSVM_KPKG $ver, cached build $out"
		echo "$out"
		return
	fi
	src=$(patched_source "$ver")
	log "kernel: $NSVM_KPKG $ver, building in $out (cold, several minutes)"
	mkdir -p "$out"
	echo "$ver" >"$out/.nsvm-version"
	make -s -C "$src" O="$out" rustavailable >&2
	configure "$src" "$out"
	local t0=$SECONDS
	make -C "$src" O="$out" -j"$NSVM_JOBS" bzImage modules >"$out/build.log" 2>&1 ||
		{ tail -n 40 "$out/build.log" >&2; die "kernel build failed"; }
	make -C "$src" O="$out" -s headers >&2
	"$NSVM_TOP"/scripts/kernel/check-bindgen-layout.sh "$out"
	touch "$out/.nsvm-built"
	log "kernel: built in $((SECONDS - t0)) s"
	echo "$out"
}

kdir() {
	local ver out
	ver=$(pkg_version)
	out=$(build_dir "$ver")
	[ -f "$out/.nsvm-built" ] || die "kernel not built: run scripts/kernel.sh build"
	echo "$out"
}

case ${1:-build} in
build) build ;;
kdir) kdir ;;
version) pkg_version ;;
*) die "usage: $0 build|kdir|version" ;;
esac
