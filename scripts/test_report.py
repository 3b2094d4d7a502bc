#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of scripts/report.py on synthetic guest logs: a green summary must
never hide a splat, a leak or a dead guest."""

import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

GOOD = """\
[    1.000000] KTAP version 1
[    1.000001]     # Subtest: nsvm_param
[    1.000002]     ok 1 every_param_answers
[    1.000003]     ok 2 values # SKIP no reason
[    1.000004] ok 1 nsvm_param
[    1.000005] RCU lockdep checking is enabled.
Starting subtest: open-close
Subtest open-close: SUCCESS (0.010s)
Subtest getparam-values: SKIP (0.001s)
# Totals: pass:39 fail:0 xfail:0 xpass:0 skip:39 error:0
NSVM-STEP kmemleak scan
NSVM-KMEMLEAK-END
NSVM-EXIT rc=0
"""


def run(log):
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        f.write(log)
    out = io.StringIO()
    old = sys.argv
    try:
        sys.argv = ["report.py", f.name]
        with contextlib.redirect_stdout(out):
            rc = report.main()
    finally:
        sys.argv = old
        os.unlink(f.name)
    return rc, out.getvalue().splitlines()


class ReportTest(unittest.TestCase):
    def test_good_run_passes(self):
        rc, lines = run(GOOD)
        self.assertEqual(rc, 0)
        self.assertEqual(lines[-1], "41 passed, 0 failed")

    def assert_fails(self, log):
        rc, lines = run(log)
        self.assertEqual(rc, 1, "\n".join(lines))
        self.assertRegex(lines[-1], r"^\d+ passed, [1-9]\d* failed$")

    def test_warning_fails(self):
        self.assert_fails(GOOD + "[    2.000000] WARNING: CPU: 0 PID: 1 at mm/hmm.c:1 x\n")

    def test_lockdep_fails(self):
        self.assert_fails(
            GOOD + "[    2.000000] WARNING: possible circular locking dependency detected\n"
        )

    def test_kfence_fails(self):
        self.assert_fails(GOOD + "[    2.000000] BUG: KFENCE: use-after-free read in x\n")

    def test_first_report_shows_where(self):
        # The summary is all a CI log may keep: it names the task, the
        # instruction and the stack of the first splat, not its registers.
        rc, lines = run(
            GOOD
            + "[    2.000000] BUG: unable to handle page fault for address: ff1100fce6600000\n"
            "[    2.000001] Oops: Oops: 0000 [#1] SMP\n"
            "[    2.000002] CPU: 1 UID: 0 PID: 1142 Comm: hmm-tests Not tainted 7.3.4\n"
            "[    2.000003] RIP: 0010:memcpy_orig+0x10/0x120\n"
            "[    2.000004] RAX: 0000000000000000 RBX: ff1100fce6600000\n"
            "[    2.000005] Call Trace:\n"
            "[    2.000006]  <TASK>\n"
            "[    2.000007]  dmirror_do_read+0x5e/0xa0 [test_hmm]\n"
            "[    2.000008]  ? dmirror_fault+0x1/0x2 [test_hmm]\n"
            "[    2.000009]  </TASK>\n"
            "[    2.000010] ---[ end trace 0000000000000000 ]---\n"
            "[    2.000011]  later_frame+0x1/0x2\n"
        )
        self.assertEqual(rc, 1)
        at = lines.index("  the first one's report:")
        self.assertEqual(
            lines[at + 1 : at + 6],
            [
                "    CPU: 1 UID: 0 PID: 1142 Comm: hmm-tests Not tainted 7.3.4",
                "    RIP: 0010:memcpy_orig+0x10/0x120",
                "    Call Trace:",
                "    dmirror_do_read+0x5e/0xa0 [test_hmm]",
                "    ? dmirror_fault+0x1/0x2 [test_hmm]",
            ],
        )
        self.assertNotIn("    later_frame+0x1/0x2", lines)
        self.assertFalse(any("RAX" in l for l in lines))

    def test_splat_in_the_middle_of_a_line_fails(self):
        # The console put a kernel message after a test's unfinished line.
        self.assert_fails(
            GOOD + "subtest died: wa[    5.123345] Call Trace:\n"
            "itpid status 0xb\n"
        )
        self.assert_fails(GOOD + "Starting sub[    2.000000] BUG: KFENCE: x\ntest: y\n")

    def test_stamped_userspace_line_is_not_a_kernel_line(self):
        # IGT's own logging starts lines with an unpadded [secs.usecs]: its
        # words are not kernel messages, and its results still count.
        rc, lines = run(
            GOOD.replace(
                "Starting subtest: open-close\n",
                "[1.234567] (core_getversion:42) WARNING: Call Trace: lockdep\n"
                "Starting subtest: open-close\n",
            )
        )
        self.assertEqual(rc, 0, "\n".join(lines))
        self.assertIn("splats      : none", lines)

    def test_kernel_line_keeps_its_userspace_start(self):
        # The userspace text before a kernel message is still read.
        rc, lines = run(GOOD + "Subtest y: FAIL (0.1s)[    2.000000] nsvm: x\n")
        self.assertEqual(rc, 1)
        self.assertTrue(any(l.startswith("igt ") and l.endswith("FAILED: y") for l in lines))

    def test_failed_binary_without_a_counted_failure_fails(self):
        # A FAIL line garbled by a kernel message is still a failed binary.
        log = GOOD.replace(
            "Starting subtest: open-close\n",
            "NSVM-STEP igt nsvm_x\nSubtest z: F[    2.000000] nsvm: x\nAIL (0.1s)\n"
            "NSVM-IGT-EXIT nsvm_x 98\nNSVM-FAIL igt nsvm_x exit 98\n"
            "Starting subtest: open-close\n",
        )
        rc, lines = run(log)
        self.assertEqual(rc, 1, "\n".join(lines))
        self.assertIn("igt         : nsvm_x failed, but no failed subtest line of it was read", lines)

    def test_rcu_stall_fails(self):
        self.assert_fails(GOOD + "[    2.000000] rcu: INFO: rcu_preempt detected stalls on CPUs\n")

    def test_kmemleak_report_fails(self):
        log = GOOD.replace(
            "NSVM-KMEMLEAK-END",
            'unreferenced object 0xffff888003 (size 64):\n  comm "insmod"\nNSVM-KMEMLEAK-END',
        )
        self.assert_fails(log)

    def test_missing_exit_marker_fails(self):
        self.assert_fails(GOOD.replace("NSVM-EXIT rc=0\n", ""))

    def test_failed_subtest_fails(self):
        self.assert_fails(GOOD + "Subtest x: FAIL (0.001s)\n")

    def test_failed_kunit_case_fails(self):
        self.assert_fails(GOOD.replace("    ok 1 every", "    not ok 1 every"))

    def test_failed_hmm_tests_fail(self):
        self.assert_fails(GOOD.replace("fail:0 xfail", "fail:2 xfail"))

    def test_failed_hmm_test_is_named_with_its_reason(self):
        log = GOOD.replace(
            "# Totals: pass:39 fail:0",
            "#  RUN           hmm.hmm_device_private.open_close ...\n"
            "#            OK  hmm.hmm_device_private.open_close\n"
            "ok 1 hmm.hmm_device_private.open_close\n"
            "#  RUN           hmm.hmm_device_private.migrate_anon_huge_fault ...\n"
            "# hmm-tests.c:2102:migrate_anon_huge_fault:Expected ret (-1) == 0 (0)\n"
            "# migrate_anon_huge_fault: Test terminated by assertion\n"
            "#          FAIL  hmm.hmm_device_private.migrate_anon_huge_fault\n"
            "not ok 2 hmm.hmm_device_private.migrate_anon_huge_fault\n"
            "# Totals: pass:38 fail:1",
        )
        rc, lines = run(log)
        self.assertEqual(rc, 1)
        i = lines.index("  FAILED: hmm.hmm_device_private.migrate_anon_huge_fault")
        self.assertEqual(
            lines[i + 1 : i + 3],
            [
                "    # hmm-tests.c:2102:migrate_anon_huge_fault:Expected ret (-1) == 0 (0)",
                "    # migrate_anon_huge_fault: Test terminated by assertion",
            ],
        )
        self.assertNotIn("open_close", "\n".join(lines))

    FAILED_RUN = (
        "#  RUN           hmm.hmm_device_private.migrate ...\n"
        "# hmm-tests.c:930:migrate:Expected buffer->cpages (511) == npages (512)\n"
        "#          FAIL  hmm.hmm_device_private.migrate\n"
        "not ok 1 hmm.hmm_device_private.migrate\n"
        "# Totals: pass:38 fail:1 xfail:0 xpass:0 skip:39 error:0\n"
        "NSVM-HMM-EXIT 1\n"
        "NSVM-HMM-RERUN\n"
    )

    def test_hmm_tests_passing_the_rerun_pass_and_show_the_flake(self):
        rc, lines = run(GOOD.replace("# Totals", self.FAILED_RUN + "# Totals"))
        self.assertEqual(rc, 0, "\n".join(lines))
        self.assertIn("  FLAKY: hmm.hmm_device_private.migrate", lines)
        self.assertIn(
            "    # hmm-tests.c:930:migrate:Expected buffer->cpages (511) == npages (512)",
            lines,
        )
        self.assertEqual(lines[-1], "41 passed, 0 failed")

    def test_hmm_tests_failing_the_rerun_fail(self):
        again = self.FAILED_RUN.split("NSVM-HMM-EXIT")[0]
        log = GOOD.replace(
            "# Totals: pass:39 fail:0 xfail:0 xpass:0 skip:39 error:0\n",
            self.FAILED_RUN + again,
        )
        rc, lines = run(log)
        self.assertEqual(rc, 1, "\n".join(lines))
        self.assertIn("  FAILED: hmm.hmm_device_private.migrate", lines)
        self.assertNotIn("  FLAKY: hmm.hmm_device_private.migrate", lines)
        self.assertEqual(lines[-1], "40 passed, 1 failed")

    def test_hmm_tests_rerun_without_totals_fails(self):
        log = GOOD.replace(
            "# Totals: pass:39 fail:0 xfail:0 xpass:0 skip:39 error:0\n",
            self.FAILED_RUN,
        )
        self.assert_fails(log)

    OOM = """\
[    3.000000] hog invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0
[    3.000000] CPU: 1 UID: 0 PID: 90 Comm: hog Not tainted 7.3.4 #1
[    3.000000] Call Trace:
[    3.000000]  <TASK>
[    3.000000]  dump_stack_lvl+0x5d/0x80
[    3.000000]  </TASK>
[    3.000000] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=hog,pid=90,uid=0
[    3.000000] Out of memory: Killed process 90 (hog) total-vm:3000000kB
"""

    def window(self, body):
        return (
            "[    2.900000] nsvm-igt: expected OOM begins\n"
            + body
            + "[    3.100000] nsvm-igt: expected OOM ends\n"
        )

    def test_oom_inside_window_passes(self):
        rc, lines = run(GOOD + self.window(self.OOM))
        self.assertEqual(rc, 0, "\n".join(lines))

    def test_oom_outside_window_fails(self):
        self.assert_fails(GOOD + self.OOM)

    def test_warning_inside_oom_window_fails(self):
        self.assert_fails(
            GOOD + self.window(self.OOM + "[    3.000000] WARNING: CPU: 0 PID: 1 at x\n")
        )

    def test_oom_report_frames_are_not_splats(self):
        # Seen in an expected OOM report: a frame whose symbol names
        # lockdep, which the lockdep pattern matched.
        frames = self.OOM.replace(
            "[    3.000000]  dump_stack_lvl+0x5d/0x80\n",
            "[    3.000000]  dump_stack_lvl+0x5d/0x80\n"
            "[    3.000000]  ? lockdep_lock+0x51/0x6c\n"
            "[    3.000000]  _RNvMs1_NtCs_4vram4Vram7migrate+0x196/0xf98 [nsvm]\n",
        )
        rc, lines = run(GOOD + self.window(frames))
        self.assertEqual(rc, 0, "\n".join(lines))

    def test_lockdep_line_inside_oom_report_fails(self):
        self.assert_fails(
            GOOD
            + self.window(
                self.OOM.replace(
                    "[    3.000000]  </TASK>\n",
                    "[    3.000000]  </TASK>\n"
                    "[    3.000000] INFO: lockdep is turned off.\n",
                )
            )
        )

    def test_trace_after_oom_report_fails(self):
        self.assert_fails(
            GOOD + self.window(self.OOM + "[    3.000000] Call Trace:\n")
        )


if __name__ == "__main__":
    unittest.main(verbosity=1)
