#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of scripts/bench.py on a synthetic benchmark log: every row lands
in the JSON, the table shows the ratios, the targets are judged on the
right sizes, and the plot is an SVG with one line per implementation."""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

MB = 1 << 20


def row(b, impl, backing, size, gib_s, **extra):
    r = {"bench": b, "impl": impl, "backing": backing, "size": size, "threads": 1,
         "bytes": size, "secs": 1.0, "gib_s": gib_s}
    r.update(extra)
    return "NSVM-BENCH " + json.dumps(r)


LOG = "\n".join([
    "[    1.0] boot chatter",
    "[    1.5] nsvm: registered 2 device(s) with 2048 MiB and 2 copy channel(s) each, uapi 0.4",
    'NSVM-BENCH-META {"cpus":2,"sizes":[1048576,4194304],"thp_enabled":"always"}',
    row("mirror", "nsvm", "4k", MB, 1.0, faults=16, batches=1),
    row("mirror", "test_hmm", "4k", MB, 0.5),
    row("mirror", "memcpy", "4k", MB, 2.0),
    # A 1 MiB "thp" buffer is not THP-backed: it must not judge the target.
    row("mirror", "nsvm", "thp", MB, 0.5, faults=16, batches=1),
    row("mirror", "test_hmm", "thp", MB, 0.5),
    row("mirror", "nsvm", "thp", 4 * MB, 3.0, faults=64, batches=1),
    row("mirror", "test_hmm", "thp", 4 * MB, 1.0),
    row("migrate-s2d", "nsvm", "thp", 4 * MB, 1.0),
    row("migrate-s2d", "test_hmm", "thp", 4 * MB, 1.0),
    row("migrate-s2d", "memcpy", "thp", 4 * MB, 4.0),
    # The one-channel rerun after a reload.
    "[    9.0] nsvm: registered 2 device(s) with 2048 MiB and 1 copy channel(s) each, uapi 0.4",
    row("migrate-s2d", "nsvm-1ch", "thp", 4 * MB, 0.5),
    "NSVM-EXIT rc=0",
]) + "\n"


class BenchTest(unittest.TestCase):
    def run_bench(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "guest.log")
            with open(log, "w") as f:
                f.write(LOG)
            out = io.StringIO()
            old = sys.argv
            try:
                sys.argv = ["bench.py", log, d, "test kernel"]
                with contextlib.redirect_stdout(out):
                    rc = bench.main()
            finally:
                sys.argv = old
            with open(os.path.join(d, "bench.json")) as f:
                data = json.load(f)
            with open(os.path.join(d, "bench.svg")) as f:
                svg = f.read()
        return rc, out.getvalue().splitlines(), data, svg

    def test_all_rows_in_json(self):
        rc, _, data, _ = self.run_bench()
        self.assertEqual(rc, 0)
        self.assertEqual(len(data["rows"]), 11)
        self.assertEqual(data["meta"]["cpus"], 2)
        self.assertEqual(data["meta"]["copy_channels"], 2)

    def test_table_ratios(self):
        _, lines, _, _ = self.run_bench()
        mirror = [l for l in lines if l.strip().startswith("1 MiB 4k")]
        self.assertTrue(mirror)
        self.assertIn("2.00x", mirror[0])  # nsvm / test_hmm
        self.assertIn("0.50x", mirror[0])  # nsvm / memcpy

    def test_thp_targets_start_at_2mib(self):
        _, lines, _, _ = self.run_bench()
        thp = [l for l in lines if "mirror thp" in l]
        self.assertEqual(len(thp), 1)
        self.assertTrue(thp[0].strip().startswith("met"), thp[0])
        s2d = [l for l in lines if "migrate-s2d thp" in l and "test_hmm" in l]
        self.assertTrue(s2d[0].strip().startswith("NOT MET"), s2d[0])

    def test_one_channel_columns(self):
        _, lines, _, _ = self.run_bench()
        self.assertTrue(any("copy engine: 2 channel(s)" in l for l in lines))
        s2d = [l for l in lines if l.strip().startswith("4 MiB thp")]
        # mirror's 4 MiB row first, then migration's, which has the 1-channel
        # figure and its ratio to test_hmm.
        self.assertEqual(len(s2d), 2)
        self.assertNotIn("0.500", s2d[0])
        self.assertIn("0.500", s2d[1])
        self.assertIn("0.50x", s2d[1])
        info = [l for l in lines if l.strip().startswith("info")]
        self.assertEqual(len(info), 1)
        self.assertIn("with 1 copy channel: min nsvm/test_hmm 0.50", info[0])

    def test_plot(self):
        _, _, _, svg = self.run_bench()
        self.assertTrue(svg.startswith("<svg"))
        self.assertEqual(svg.count("<polyline"), 3 + 2 + 4)

    def test_no_rows_fails(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "guest.log")
            with open(log, "w") as f:
                f.write("NSVM-EXIT rc=0\n")
            old = sys.argv
            try:
                sys.argv = ["bench.py", log, d]
                with contextlib.redirect_stderr(io.StringIO()):
                    self.assertEqual(bench.main(), 1)
            finally:
                sys.argv = old


if __name__ == "__main__":
    unittest.main(verbosity=1)
