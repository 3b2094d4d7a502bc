#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Check a kernel build's Rust bindings for a known bindgen bug: an empty C
# struct with an alignment attribute (such as struct sched_statistics,
# which is `{} ____cacheline_aligned` without CONFIG_SCHEDSTATS) comes out
# as `pub struct x {}` with alignment 1, so every field after an embedded
# one sits at another offset in Rust than in C. The kernel crate then
# reads the wrong bytes (Task::pid(), CurrentTask::mm(), ...).
#
# Every empty struct of rust/bindings/bindings_generated.rs gets a static
# assertion, compiled by the kernel's own C compiler and flags (as an
# external module of the build), that its C alignment is 1 too. Fails,
# naming each struct whose alignment bindgen dropped.
#
#   scripts/kernel/check-bindgen-layout.sh KDIR
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

kdir=${1:?usage: check-bindgen-layout.sh KDIR}
ksrc=$(readlink -f "$kdir/source")
gen=$kdir/rust/bindings/bindings_generated.rs
[ -f "$gen" ] || die "no $gen: not a Rust kernel build"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "obj-m := layout.o" >"$tmp/Kbuild"

# check FORMAT NAME...: compiles one assertion per line for each name,
# spelled as FORMAT says ("struct %s" for a struct tag, "%s" for a
# typedef); prints "bad NAME" for each failed assertion and "unknown NAME"
# for each name that is not a type of that spelling.
check() {
	local format=$1 out res
	shift
	{
		echo "#include \"$ksrc/rust/bindings/bindings_helper.h\""
		for s in "$@"; do
			printf "_Static_assert(__alignof__($format) == 1, \"%s\");\n" "$s" "$s"
		done
	} >"$tmp/layout.c"
	out=$(make -s -C "$kdir" M="$tmp" layout.o 2>&1) && return 0
	# The assertions start on line 2: line N checks name N - 1.
	res=$(awk -v names="$*" '
		BEGIN { n = split(names, name, " ") }
		match($0, /layout\.c:[0-9]+:[0-9]+: error: /) {
			split(substr($0, RSTART), f, ":")
			i = f[2] - 1
			if (i < 1 || i > n || seen[i]++) next
			print ($0 ~ /static assertion failed/ ? "bad " : "unknown ") name[i]
		}' <<<"$out")
	# A failure that is none of the assertions': the check itself broke.
	[ -n "$res" ] || { echo "$out" >&2; die "bindings: the layout check did not compile"; }
	echo "$res"
}

mapfile -t empty < <(sed -n 's/^pub struct \([A-Za-z0-9_]*\) {}$/\1/p' "$gen")
# Struct tags first; what is no struct tag, as a typedef; what is neither
# is an anonymous member struct (bindgen's __bindgen_ty_N), which C cannot
# name: not checked.
first=$(check "struct %s" "${empty[@]}")
mapfile -t retry < <(sed -n 's/^unknown //p' <<<"$first")
second=
[ ${#retry[@]} -eq 0 ] || second=$(check "%s" "${retry[@]}")
bad=$(printf '%s\n%s\n' "$first" "$second" | sed -n 's/^bad //p')
unnamed=$(sed -n 's/^unknown //p' <<<"$second" | grep -c . || true)
if [ -z "$bad" ]; then
	log "bindings: ${#empty[@]} empty structs, of alignment 1 in C as in Rust ($unnamed anonymous ones not checked)"
	exit 0
fi
log "bindings: bindgen dropped the alignment of these empty structs:"
sed 's/^/[nsvm]   /' <<<"$bad" >&2
die "bindings: Rust's layout of every struct that embeds one differs from C's"
