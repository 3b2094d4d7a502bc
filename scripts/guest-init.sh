#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the nsvm test guest (busybox). The mode comes from the kernel
# command line: nsvm_mode=test|run|bench. Everything goes to the serial console;
# the host parses it (scripts/report.py). The last line is the marker
# "NSVM-EXIT rc=N", then the guest powers off.

export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm

mode=test
ndev=2
vram=32
igt=""
hmm=1
demo_mib=32
for arg in $(cat /proc/cmdline); do
	case $arg in
	nsvm_mode=*) mode=${arg#nsvm_mode=} ;;
	nsvm_devices=*) ndev=${arg#nsvm_devices=} ;;
	nsvm_vram=*) vram=${arg#nsvm_vram=} ;;
	nsvm_igt=*) igt=${arg#nsvm_igt=} ;;
	nsvm_hmm=*) hmm=${arg#nsvm_hmm=} ;;
	nsvm_seed=*) export NSVM_SEED=${arg#nsvm_seed=} ;;
	nsvm_fuzz_calls=*) export NSVM_FUZZ_CALLS=${arg#nsvm_fuzz_calls=} ;;
	nsvm_stress_secs=*) export NSVM_STRESS_SECS=${arg#nsvm_stress_secs=} ;;
	nsvm_inject_rounds=*) export NSVM_INJECT_ROUNDS=${arg#nsvm_inject_rounds=} ;;
	nsvm_bench=all) ;;
	nsvm_bench=*) export NSVM_BENCH=${arg#nsvm_bench=} ;;
	nsvm_bench_max_mb=*) export NSVM_BENCH_MAX_MB=${arg#nsvm_bench_max_mb=} ;;
	nsvm_bench_threads=*) export NSVM_BENCH_THREADS=${arg#nsvm_bench_threads=} ;;
	nsvm_demo_mib=*) demo_mib=${arg#nsvm_demo_mib=} ;;
	esac
done
export NSVM_NUM_DEVICES=$ndev

rc=0
step() { echo "NSVM-STEP $*"; }
fail() { echo "NSVM-FAIL $*"; rc=1; }

echo "NSVM-GUEST kernel $(uname -r) ($(cat /etc/nsvm-kernel)), mode $mode, $(nproc) cpus"
cat /proc/version

step "insmod nsvm.ko num_devices=$ndev vram_mb=$vram (KUnit runs here)"
insmod /lib/modules/nsvm.ko num_devices="$ndev" vram_mb="$vram" || fail "insmod nsvm"
ls -l /dev/dri

case $mode in
run)
	step "demo"
	/bin/nsvm-info || fail "nsvm-info"
	echo
	# IGT's gputop watches while the demo runs; its busiest sample of
	# the demo is shown after it.
	/bin/gputop -n 8 -d 0.5 >/tmp/gputop.out 2>&1 &
	gputop=$!
	/bin/nsvm-demo --mib "$demo_mib" || fail "nsvm-demo"
	wait "$gputop" || fail "gputop"
	echo
	echo "gputop (igt-gpu-tools) while the demo ran, its busiest sample:"
	tr -d '\033' </tmp/gputop.out | sed 's/\[[0-9;]*[A-Za-z]//g' | awk '
		/^DRM minor/ { frame = $0 "\n"; next }
		{ frame = frame $0 "\n" }
		/nsvm-demo/ && match($0, /[0-9.]+%/) {
			pct = substr($0, RSTART, RLENGTH - 1) + 0
			if (pct >= best) { best = pct; keep = frame }
		}
		END { printf "%s", keep }' | grep -v '^$' || fail "gputop shows no nsvm-demo"
	;;
bench)
	step "bench (nsvm, test_hmm, memcpy)"
	if insmod /lib/modules/test_hmm.ko; then
		(cd /tmp && /bin/nsvm-bench) || fail "nsvm-bench"
		rmmod test_hmm || fail "rmmod test_hmm"
		# Migration again with a one-channel copy engine, for the report.
		case ,${NSVM_BENCH:-migrate}, in
		*,migrate,*)
			step "bench migrate-1ch (nsvm copy_channels=1)"
			rmmod nsvm && insmod /lib/modules/nsvm.ko num_devices="$ndev" \
				vram_mb="$vram" copy_channels=1 || fail "reload nsvm"
			(cd /tmp && NSVM_BENCH=migrate-1ch /bin/nsvm-bench) ||
				fail "nsvm-bench migrate-1ch"
			;;
		esac
	else
		fail "insmod test_hmm"
	fi
	;;
test)
	# Huge pages for the hugetlbfs subtests (nsvm's and the C peer's).
	echo 64 >/proc/sys/vm/nr_hugepages
	# nsvm_igt=BINARY[:GLOB] runs one binary, or some of its subtests;
	# nsvm_igt=queues:BINARY[:GLOB] only its pass through exec queues.
	for t in /igt/*; do
		bin=${igt%%:*}
		[ -z "$igt" ] || [ "$bin" = "$(basename "$t")" ] || continue
		step "igt $(basename "$t")"
		case $igt in
		*:*) "$t" --run-subtest "${igt#*:}" ;;
		*) "$t" ;;
		esac
		st=$?
		echo "NSVM-IGT-EXIT $(basename "$t") $st"
		[ $st = 0 ] || [ $st = 77 ] || fail "igt $(basename "$t") exit $st"
	done

	# The EXEC-based binaries again, their EXECs as overlapping jobs on
	# exec queues (igt-tests/src/queued.rs); subtests without one skip.
	case $igt in
	"" | queues:*)
		sel=${igt#queues:}
		for b in nsvm_svm nsvm_migrate nsvm_robust; do
			[ -z "$igt" ] || [ "${sel%%:*}" = "$b" ] || continue
			step "igt $b through queues"
			case $sel in
			*:*) NSVM_IGT_QUEUES=1 "/igt/$b" --run-subtest "${sel#*:}" ;;
			*) NSVM_IGT_QUEUES=1 "/igt/$b" ;;
			esac
			st=$?
			echo "NSVM-IGT-EXIT $b-queues $st"
			[ $st = 0 ] || [ $st = 77 ] || fail "igt $b through queues exit $st"
		done
		;;
	esac

	# Module unload with pages in device memory (unloads and reloads).
	case $igt in
	"" | nsvm_migrate | nsvm_migrate:*unload*)
		step "igt nsvm_migrate unload"
		NSVM_UNLOAD=1 NSVM_INSMOD_ARGS="num_devices=$ndev vram_mb=$vram" \
			/igt/nsvm_migrate --run-subtest 'unload-*'
		st=$?
		echo "NSVM-IGT-EXIT nsvm_migrate-unload $st"
		[ $st = 0 ] || fail "igt nsvm_migrate unload exit $st"
		;;
	esac

	# nsvm_hmm=0 skips the C peer; the unload and kmemleak scan below
	# run either way.
	if [ "$hmm" = 1 ]; then
		step "hmm-tests (C peer: lib/test_hmm.c)"
		hmm_skip="-T benchmark_thp_migration"
		if insmod /lib/modules/test_hmm.ko; then
			# Less its benchmark: a fixed 120 s budget is an absolute
			# time, which a loaded TCG host exceeds (make bench runs the
			# same round trip as a ratio).
			(cd /tmp && /bin/hmm-tests $hmm_skip)
			st=$?
			echo "NSVM-HMM-EXIT $st"
			# The peer's own tests are the baseline, not nsvm's: a failed
			# run is shown with the free memory and its fragmentation
			# (the kernel has no VM event counters), then run once more,
			# whole. report.py lists the first run's failures and counts
			# the second run.
			if [ $st != 0 ]; then
				grep -E '^(MemFree|AnonHugePages|HugePages_Free)' /proc/meminfo
				cat /proc/buddyinfo
				echo "NSVM-HMM-RERUN"
				(cd /tmp && /bin/hmm-tests $hmm_skip)
				echo "NSVM-HMM-EXIT $?"
			fi
			rmmod test_hmm || fail "rmmod test_hmm"
		else
			fail "insmod test_hmm"
		fi
	fi
	echo 0 >/proc/sys/vm/nr_hugepages
	;;
esac

step "rmmod nsvm"
rmmod nsvm || fail "rmmod nsvm"

# kmemleak only reports objects older than 5 s: let them age, then scan
# twice (the second scan confirms what the first one suspected).
step "kmemleak scan"
if [ "$mode" = bench ]; then
	echo "(the benchmark kernel has no kmemleak)"
	echo "NSVM-KMEMLEAK-END"
elif [ -w /sys/kernel/debug/kmemleak ]; then
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak
	echo "NSVM-KMEMLEAK-END"
else
	fail "kmemleak not available"
fi

echo "NSVM-EXIT rc=$rc"
# qemu runs with -no-reboot: a reboot ends it at once, with no ACPI delay.
reboot -f
