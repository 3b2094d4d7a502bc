#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Reads the serial log of an nsvm guest run and prints the summary.

Counts KUnit cases (KTAP in the kernel log), IGT subtests and the C peer's
kselftest totals; fails on any kernel splat, a kmemleak report, an IGT
binary that failed, or a guest that did not reach its exit marker. The last
line is 'N passed, N failed'; the exit status is non-zero on any failure.
"""

import re
import sys

# printk's time stamp, "[%5lu.%06lu] ": the seconds padded to five columns.
# A kernel message can start anywhere in a console line, after userspace
# output that did not end its line yet; a userspace line that merely starts
# with "[secs.usecs]" (unpadded, as IGT's own logging writes) is not one.
KERNEL_STAMP = re.compile(r"\[(?=[ \d]{5})\s*\d+\.\d{6}\] ?")

# Kernel messages that mean something went wrong, whatever the tests said.
SPLATS = [
    re.compile(p)
    for p in (
        r"\bBUG\b",
        r"\bWARNING:",
        r"\bOops\b",
        r"general protection fault",
        r"Kernel panic",
        r"Call Trace:",
        r"possible (recursive|circular) locking",
        r"inconsistent lock state",
        r"lockdep",
        r"KFENCE",
        r"kmemleak: \d+ new suspected memory leaks",
        r"rcu.*detected stalls",
        r"blocked for more than \d+ seconds",
        r"list_(add|del) corruption",
        r"UBSAN",
        r"refcount_t:",
        r"invoked oom-killer",
    )
]
# Lines that look like splats but are benign boot chatter.
BENIGN = [
    re.compile(p)
    for p in (
        r"lockdep: .*(Lock dependency validator|tracked)",
        r"RCU lockdep checking is enabled",
        r"^\s*(memory used by lock dependency info|per task-struct memory footprint)",
        r"KFENCE: initialized",
        r"kmemleak: Kernel memory leak detector initialized",
        r"kmemleak: Automatic memory scanning thread started",
    )
]

# A test that drives the guest out of memory on purpose brackets it with
# these marks, written to /dev/kmsg so that they are ordered with the
# kernel's lines. Inside the window, and only there, an OOM-killer report
# (from "invoked oom-killer" to "Out of memory: Killed process") is
# expected: its stack dump is not a splat. Anything else still is.
OOM_BEGIN = "nsvm-igt: expected OOM begins"
OOM_END = "nsvm-igt: expected OOM ends"
OOM_REPORT_BEGIN = re.compile(r"invoked oom-killer")
OOM_REPORT_END = re.compile(r"Out of memory: Killed process|oom-kill:constraint")
# The lines of the report's stack dump: "Call Trace:" and the frames
# (" ? sym+0x51/0x6c [module]"), whose symbol names can match a splat
# pattern (lockdep_lock).
STACK_FRAME = re.compile(r"^\s*(\? )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+( \[\w+\])?$")
OOM_REPORT_SPLATS = [
    re.compile(r"Call Trace:"),
    OOM_REPORT_BEGIN,
    STACK_FRAME,
]
# What the summary shows of the first splat's report, so that a CI log
# that has only the summary still names where it happened: the task, the
# faulting instruction and the stack, up to the end of the report.
REPORT_DETAIL = re.compile(r"\bComm: |\bRIP: |Call Trace:")
REPORT_END = re.compile(r"---\[ end trace")
REPORT_MAX = 32

KTAP_RESULT = re.compile(r"^(\s+)(not ok|ok) \d+ (\S+)(.*)$")
KTAP_SUBTEST = re.compile(r"^\s+# Subtest: (\S+)")
IGT_RESULT = re.compile(r"^Subtest (\S+): (SUCCESS|FAIL|SKIP|CRASH|TIMEOUT) \(")
# The C peer's kselftest harness: a result line per test, and before it
# the harness's comments ("# file.c:line:test:Expected ...", "# test: Test
# terminated by timeout"), which say why a test failed.
KSFT_RESULT = re.compile(r"^not ok \d+ (\S+)")
KSFT_RUN = re.compile(r"^#\s+RUN\s")
KSFT_COMMENT = re.compile(r"^# (?!\s*(OK|FAIL|SKIP)\s)\S")
KSFT_TOTALS = re.compile(
    r"# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)"
)


def main():
    path = sys.argv[1]
    header = sys.argv[2] if len(sys.argv) > 2 else ""
    with open(path, errors="replace") as f:
        lines = [l.rstrip("\r\n") for l in f]

    # KUnit cases per origin: nsvm's own suites, and the kernel's built-in
    # ones that run at boot (a failure there is a broken test kernel).
    kunit = {o: {"pass": 0, "fail": 0, "skip": 0} for o in ("nsvm", "kernel")}
    kunit_failed = []
    suites = {"nsvm": set(), "kernel": set()}
    suite = None
    igt = {"pass": 0, "fail": 0, "skip": 0}
    igt_failed = []
    # The C peer's runs: one, or two when the first failed (guest-init.sh
    # then runs it once more, whole, and the second run counts).
    hmm_runs = [{"totals": None, "failed": []}]
    hmm_comments = []
    splats = []
    # The lines of the first splat's report; None before it, and
    # `reporting` while it lasts.
    report = None
    reporting = False
    guest_fail = []
    exit_rc = None
    in_kmemleak = False
    kmemleak = []
    oom_window = False
    oom_report = False
    oom_kills = 0

    # Failed subtests since the last IGT binary started, and binaries that
    # failed without one counted (their result line garbled by a kernel
    # message in its middle).
    igt_fails_here = 0
    igt_unaccounted = []

    for line in lines:
        # The userspace text of the line, then each kernel message in it.
        raw, *kmsgs = KERNEL_STAMP.split(line)
        for msg in kmsgs:
            sub = KTAP_SUBTEST.match(msg)
            if sub:
                suite = sub.group(1)
            r = KTAP_RESULT.match(msg)
            if r and suite:
                origin = "nsvm" if suite.startswith("nsvm") else "kernel"
                suites[origin].add(suite)
                if "# SKIP" in r.group(4):
                    kunit[origin]["skip"] += 1
                elif r.group(2) == "ok":
                    kunit[origin]["pass"] += 1
                else:
                    kunit[origin]["fail"] += 1
                    kunit_failed.append(f"{suite}.{r.group(3)}")
            if OOM_BEGIN in msg:
                oom_window = True
            elif OOM_END in msg:
                oom_window = oom_report = False
            elif oom_window and OOM_REPORT_BEGIN.search(msg):
                oom_report = True
                oom_kills += 1
                continue
            elif oom_report and OOM_REPORT_END.search(msg):
                oom_report = False
            if oom_report and any(p.search(msg) for p in OOM_REPORT_SPLATS):
                continue
            if reporting:
                if REPORT_DETAIL.search(msg) or STACK_FRAME.match(msg):
                    report.append(msg.strip())
                reporting = len(report) < REPORT_MAX and not REPORT_END.search(msg)
            if any(p.search(msg) for p in SPLATS) and not any(
                b.search(msg) for b in BENIGN
            ):
                splats.append(line)
                if report is None:
                    report, reporting = [], True

        if raw.startswith("NSVM-KMEMLEAK-END"):
            in_kmemleak = False
        elif raw.startswith("NSVM-STEP kmemleak"):
            in_kmemleak = True
        elif in_kmemleak and raw.strip():
            kmemleak.append(raw)
        if raw.startswith("NSVM-FAIL "):
            guest_fail.append(raw[len("NSVM-FAIL "):])
        m = re.match(r"^NSVM-EXIT rc=(\d+)", raw)
        if m:
            exit_rc = int(m.group(1))
        if raw.startswith("NSVM-STEP igt "):
            igt_fails_here = 0
        m = IGT_RESULT.match(raw)
        if m:
            key = {"SUCCESS": "pass", "SKIP": "skip"}.get(m.group(2), "fail")
            igt[key] += 1
            if key == "fail":
                igt_failed.append(m.group(1))
                igt_fails_here += 1
        m = re.match(r"^NSVM-IGT-EXIT (\S+) (\d+)", raw)
        if m and m.group(2) not in ("0", "77") and not igt_fails_here:
            igt_unaccounted.append(m.group(1))
        if raw.startswith("NSVM-HMM-RERUN"):
            hmm_runs.append({"totals": None, "failed": []})
        if KSFT_RUN.match(raw):
            hmm_comments = []
        elif KSFT_COMMENT.match(raw):
            hmm_comments.append(raw)
        m = KSFT_RESULT.match(raw)
        if m:
            hmm_runs[-1]["failed"].append((m.group(1), hmm_comments[-3:]))
        m = KSFT_TOTALS.search(raw)
        if m:
            v = [int(x) for x in m.groups()]
            hmm_runs[-1]["totals"] = {
                "pass": v[0] + v[2],
                "fail": v[1] + v[3] + v[5],
                "skip": v[4],
            }

    hmm = hmm_runs[-1]["totals"]
    if hmm is None and len(hmm_runs) > 1:
        # The rerun did not get to its totals.
        hmm = {"pass": 0, "fail": 1, "skip": 0}
    # Tests that failed the first run and not the rerun.
    flaky = []
    if len(hmm_runs) > 1:
        again = {name for name, _ in hmm_runs[-1]["failed"]}
        flaky = [(n, a) for n, a in hmm_runs[0]["failed"] if n not in again]

    # kmemleak's report lines are the file's content.
    leaks = [l for l in kmemleak if "unreferenced object" in l]

    passed = sum(k["pass"] for k in kunit.values()) + igt["pass"]
    failed = sum(k["fail"] for k in kunit.values()) + igt["fail"]
    if hmm:
        passed += hmm["pass"]
        failed += hmm["fail"]

    print(f"== nsvm summary {header}==")
    for origin, k in kunit.items():
        print(
            f"kunit {origin:<6}: {k['pass']} passed, {k['fail']} failed, "
            f"{k['skip']} skipped ({', '.join(sorted(suites[origin])) or 'no suite'})"
        )
    if kunit_failed:
        print(f"  FAILED: {' '.join(kunit_failed)}")
    print(
        f"igt         : {igt['pass']} passed, {igt['fail']} failed, {igt['skip']} skipped"
        + (f"  FAILED: {' '.join(igt_failed)}" if igt_failed else "")
    )
    if hmm:
        print(
            f"hmm-tests   : {hmm['pass']} passed, {hmm['fail']} failed, "
            f"{hmm['skip']} skipped (C peer: lib/test_hmm.c, the baseline"
            + (", second run" if len(hmm_runs) > 1 else "")
            + ")"
        )
        for label, tests in (("FLAKY", flaky), ("FAILED", hmm_runs[-1]["failed"])):
            for name, comments in tests[:20]:
                print(f"  {label}: {name}")
                for c in comments:
                    print(f"    {c}")
        if flaky:
            print("  (FLAKY: failed the first run, passed the second)")
    print(f"splats      : {len(splats) or 'none'}")
    for s in splats[:20]:
        print(f"  {s}")
    if report:
        print("  the first one's report:")
        for r in report:
            print(f"    {r}")
    if oom_kills:
        print(f"oom         : {oom_kills} expected OOM report(s), inside marked windows")
    print(f"kmemleak    : {len(leaks) or 'clean'}")
    for l in kmemleak[:20]:
        print(f"  {l}")
    for g in guest_fail:
        print(f"guest       : FAIL {g}")
    for b in igt_unaccounted:
        print(f"igt         : {b} failed, but no failed subtest line of it was read")
    print(f"guest exit  : {'rc=%d' % exit_rc if exit_rc is not None else 'no exit marker (crash or timeout)'}")

    # Anything wrong besides counted test failures counts as one failure
    # each, so the closing line never reads '0 failed' over a broken run.
    extra = (1 if splats else 0) + (1 if leaks else 0) + (1 if exit_rc != 0 else 0)
    extra += sum(1 for g in guest_fail if not g.startswith("igt "))
    extra += len(igt_unaccounted)
    print(f"{passed} passed, {failed + extra} failed")
    return 1 if failed + extra else 0


if __name__ == "__main__":
    sys.exit(main())
