#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build everything, boot the test guest, and report.
#
#   scripts/vm.sh test   KUnit + the IGT-style suite + the C peer's hmm-tests
#   scripts/vm.sh run    load the driver and run the demo
#   scripts/vm.sh bench  the benchmark kernel (NSVM_KCONFIG=bench): nsvm,
#                        test_hmm and memcpy side by side; out/bench.*
#
# Environment: NSVM_DEVICES (default 2), NSVM_ACCEL (default tcg: KVM guests
# hang on these machines), NSVM_TIMEOUT (seconds, default 1500),
# NSVM_CACHE_DIR (default ~/.cache/nsvm); for development, NSVM_IGT=BIN[:GLOB]
# runs one test binary (or some of its subtests; queues:BIN[:GLOB] only its
# pass through exec queues), NSVM_VRAM_MB (default 32:
# small, so the 4x-device-memory test is quick), NSVM_HMM=0 skips the C
# peer's hmm-tests and NSVM_SMP sets the guest's CPUs (default 2: with 1,
# no wake-up crosses CPUs, which shows what cross-CPU wake-ups cost).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode=${1:-test}
case $mode in test | run) ;; bench) export NSVM_KCONFIG=bench ;; *) die "usage: $0 test|run|bench" ;; esac
ndev=${NSVM_DEVICES:-2}
mem=3G
vram=${NSVM_VRAM_MB:-32}
if [ "$mode" = run ]; then
	# Room for both of the demo's arrays in device memory.
	vram=${NSVM_VRAM_MB:-256}
fi
if [ "$mode" = bench ]; then
	# 1 GiB points: the buffer, test_hmm's bounce buffer and both devices'
	# backing memory live at once.
	ndev=1 mem=6G vram=${NSVM_VRAM_MB:-2048}
fi
accel=${NSVM_ACCEL:-tcg,thread=multi}
timeout_s=${NSVM_TIMEOUT:-1500}
out=$NSVM_TOP/out
mkdir -p "$out"
t_start=$SECONDS

"$NSVM_TOP"/scripts/setup-host.sh

kdir=$("$NSVM_TOP"/scripts/kernel.sh build)
kver=$(cat "$kdir/.nsvm-version")
ksrc=$(readlink -f "$kdir/source")
log "kernel: $NSVM_KPKG $kver ($(make -s -C "$kdir" kernelrelease))"

log "checks: generated bindings, rustfmt, the log and bench reporters"
"$NSVM_TOP"/scripts/gen-bindings.sh "$kdir" --check
"$NSVM_TOP"/scripts/fmt.sh "$kdir" --check
python3 "$NSVM_TOP"/scripts/test_report.py >&2
python3 "$NSVM_TOP"/scripts/test_bench.py >&2
log "checks: userspace crates' tests (uapi layout against the C header)"
# Quiet when they pass; their whole output when one fails.
cargo_tests=$(cd "$NSVM_TOP" && cargo test -q --locked --workspace 2>&1) ||
	{ echo "$cargo_tests" >&2; die "userspace crate tests failed"; }

log "module: building nsvm.ko"
make -s -C "$kdir" M="$NSVM_TOP" modules >&2

log "userspace: building the guest binaries (musl, static)"
(cd "$NSVM_TOP" && cargo build -q --release --locked --target x86_64-unknown-linux-musl \
	--bins --examples >&2)
rbin=$NSVM_TOP/target/x86_64-unknown-linux-musl/release

# The uapi from C: nsvm_c, against the header and libdrm (static, so the
# guest needs no shared libraries).
log "userspace: building nsvm_c (C, uapi header + libdrm)"
gcc -static -O2 -Wall -Wextra -Werror -std=gnu11 $(pkg-config --cflags libdrm) \
	-I"$NSVM_TOP/uapi/drm" -o "$out/nsvm_c" "$NSVM_TOP/igt-tests/c/nsvm_c.c" -ldrm >&2

# nsvm_c again, dynamically linked, to run in the guest on Debian 13's own
# glibc and libdrm (trixie's libc6 and libdrm2, unpacked under
# /opt/trixie): the enumeration of the libdrm a Debian 13 user has.
log "userspace: nsvm_c against Debian 13's libdrm (trixie libc6, libdrm2)"
gcc -O2 -Wall -Wextra -Werror -std=gnu11 $(pkg-config --cflags libdrm) \
	-I"$NSVM_TOP/uapi/drm" -o "$out/nsvm_c_dyn" "$NSVM_TOP/igt-tests/c/nsvm_c.c" -ldrm >&2
# Unpacks packages $3... of Debian suite $1 into $2, afresh.
unpack_debs() {
	local suite=$1 dir=$2 pkg deb
	shift 2
	rm -rf "$dir"
	for pkg in "$@"; do
		deb=$(nsvm_fetch_deb "$suite" "$pkg")
		log "  $(basename "$deb")"
		dpkg-deb -x "$deb" "$dir"
	done
}
trixie=$out/trixie
unpack_debs trixie "$trixie" libc6 libdrm2

# gputop from sid's igt-gpu-tools, which needs nothing but glibc: sid's,
# under /opt/sid (nsvm_drm's gputop subtest runs it).
log "userspace: gputop from sid (igt-gpu-tools, libc6)"
sid=$out/sid
unpack_debs sid "$sid" libc6 igt-gpu-tools

# The C peer's suite, built from the same tree as the kernel, once per build.
hmm_tests=$kdir/nsvm-guest/hmm-tests
if [ ! -x "$hmm_tests" ]; then
	log "hmm-tests: building the C peer's selftest"
	mkdir -p "$(dirname "$hmm_tests")"
	mm=$ksrc/tools/testing/selftests/mm
	gcc -static -O2 -Wall -U_FORTIFY_SOURCE -I"$ksrc" -isystem "$kdir/usr/include" \
		-I"$ksrc/tools/include" -I"$ksrc/tools/testing/selftests" \
		-o "$hmm_tests.tmp" "$mm"/hmm-tests.c "$mm"/vm_util.c "$mm"/hugepage_settings.c \
		-lpthread 2>"$kdir/nsvm-guest/hmm-tests.log" ||
		{ cat "$kdir/nsvm-guest/hmm-tests.log" >&2; die "hmm-tests build failed"; }
	mv "$hmm_tests.tmp" "$hmm_tests"
fi

log "rootfs: assembling the initramfs"
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,igt,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
	[ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
cp "$NSVM_TOP"/scripts/guest-init.sh "$root/init"
mkdir -p "$root/etc"
echo "$NSVM_KPKG $kver" >"$root/etc/nsvm-kernel"
cp "$NSVM_TOP"/drivers/gpu/drm/nsvm/nsvm.ko "$root/lib/modules/"
cp "$kdir"/lib/test_hmm.ko "$root/lib/modules/"
cp "$hmm_tests" "$root/bin/"
cp "$rbin/examples/nsvm-info" "$rbin/examples/nsvm-demo" "$rbin/nsvm-bench" "$root/bin/"
for t in "$NSVM_TOP"/igt-tests/src/bin/*.rs; do
	cp "$rbin/$(basename "$t" .rs)" "$root/igt/"
done
cp "$out/nsvm_c" "$root/igt/"

# Binary $3 of another Debian's userspace, in the guest as $4: under
# /opt/$2 with the loader, glibc and libraries $5... of the tree $1, and a
# wrapper that runs it on them.
guest_foreign() {
	local from=$1 name=$2 bin=$3 as=$4 lib
	shift 4
	mkdir -p "$root/opt/$name/lib" "$root/opt/$name/bin"
	for lib in ld-linux-x86-64.so.2 libc.so.6 "$@"; do
		cp -L "$from/usr/lib/x86_64-linux-gnu/$lib" "$root/opt/$name/lib/"
	done
	cp "$bin" "$root/opt/$name/bin/"
	printf '#!/bin/sh\nexec /opt/%s/lib/ld-linux-x86-64.so.2 --library-path /opt/%s/lib /opt/%s/bin/%s "$@"\n' \
		"$name" "$name" "$name" "$(basename "$bin")" >"$root$as"
	chmod +x "$root$as"
}
# nsvm_c on Debian 13's glibc and libdrm; IGT's gputop on sid's glibc.
guest_foreign "$trixie" trixie "$out/nsvm_c_dyn" /igt/nsvm_c_trixie libdrm.so.2
guest_foreign "$sid" sid "$sid/usr/bin/gputop" /bin/gputop
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$out/rootfs.cpio"

log "vm: booting ($accel, mode $mode, $ndev devices); log in out/guest-$mode.log"
t_boot=$SECONDS
set +e
timeout --foreground "$timeout_s" qemu-system-x86_64 \
	-accel "$accel" -cpu max -smp ${NSVM_SMP:-2} -m "$mem" \
	-nographic -no-reboot -monitor none -serial stdio \
	-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/rootfs.cpio" \
	-append "console=ttyS0 panic=-1 oops=panic=0 nsvm_mode=$mode nsvm_devices=$ndev nsvm_vram=$vram nsvm_igt=${NSVM_IGT:-} nsvm_hmm=${NSVM_HMM:-1} nsvm_seed=${NSVM_SEED:-0x5eed} nsvm_fuzz_calls=${NSVM_FUZZ_CALLS:-5000} nsvm_stress_secs=${NSVM_STRESS_SECS:-6} nsvm_inject_rounds=${NSVM_INJECT_ROUNDS:-300} nsvm_bench=${NSVM_BENCH:-all} nsvm_bench_max_mb=${NSVM_BENCH_MAX_MB:-1024} nsvm_bench_threads=${NSVM_BENCH_THREADS:-4} nsvm_demo_mib=${NSVM_DEMO_MIB:-32}" \
	</dev/null 2>&1 | if [ "$mode" = run ]; then
	# The demo's output as it comes, progress line included.
	tee "$out/guest-$mode.log" | sed -un '/NSVM-STEP demo/,/NSVM-STEP rmmod/{/NSVM-STEP/d;p}'
else
	cat >"$out/guest-$mode.log"
fi
qemu_rc=${PIPESTATUS[0]}
set -e
log "vm: guest ran $((SECONDS - t_boot)) s (qemu exit $qemu_rc); total $((SECONDS - t_start)) s"

if [ "$mode" = bench ]; then
	python3 "$NSVM_TOP"/scripts/bench.py "$out/guest-$mode.log" "$out" "$NSVM_KPKG $kver" ||
		die "no benchmark results in out/guest-bench.log"
fi
python3 "$NSVM_TOP"/scripts/report.py "$out/guest-$mode.log" "($NSVM_KPKG $kver, $mode) "
