#!/usr/bin/env python
"""Run detectron2's own unit tests without and with ``import fpt``, and compare them test by test.

Usage: python tools/detectron2_tests.py DETECTRON2_TESTS_DIR [--out DIR] [--timeout S] [-- PYTEST_ARGS]

``DETECTRON2_TESTS_DIR`` is the ``tests/`` folder of a detectron2 source tree (v0.6's or main's,
matching the installed detectron2). The tests run on the installed detectron2 (from a temporary
folder outside any source tree, so that ``import detectron2`` finds the installed package), in
two fresh interpreters: plain, and with ``fpt`` imported before pytest collects anything. Each
test's outcome is read back from pytest's JUnit XML, and the comparison is printed:

- broken by fpt: passes without fpt, fails with it (must be none; exit code 1 otherwise);
- fixed by fpt: fails (or is not even collected) without fpt, passes with it;
- failing with fpt: grouped by the first line of the error (downloads, CUDA, ...).

Offline machines fail the tests that download model-zoo weights either way.
"""

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

RUNNER = "import sys, pytest{fpt}; sys.exit(pytest.main(sys.argv[1:]))"


def run(tests_dir, xml_path, with_fpt, timeout, extra):
    code = RUNNER.format(fpt=", fpt" if with_fpt else "")
    cmd = [sys.executable, "-c", code, tests_dir, "-q", "-p", "no:cacheprovider", "-o"]
    cmd += ["addopts=", "--rootdir", tests_dir, "--continue-on-collection-errors"]
    cmd += [f"--junitxml={xml_path}", *extra]
    with tempfile.TemporaryDirectory() as cwd:
        try:
            r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"detectron2's tests {'with' if with_fpt else 'without'} fpt "
                f"took longer than {timeout} s"
            )
    summary = (r.stdout.strip().splitlines() or [""])[-1]
    print(f"[detectron2_tests] {'with' if with_fpt else 'without'} fpt: {summary}", flush=True)
    return outcomes(xml_path)


def outcomes(xml_path):
    """{test id: (outcome, first line of the message)} from a JUnit XML file. A module that
    fails to import is one entry named after the module, outcome "error"."""
    result = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or node.text or "").strip().splitlines()
                message = message[0][:160] if message else ""
                break
        result[name] = (outcome, message)
    return result


def module_of(test_id):
    return test_id.split("::")[0].rsplit(".", 1)[0] if "::" in test_id else test_id


def compare(plain, with_fpt):
    """(broken, fixed, failing) test ids; a test absent without fpt (its module did not import)
    counts as failing there."""
    broken, fixed, failing = [], [], collections.defaultdict(list)
    for test, (outcome, message) in sorted(with_fpt.items()):
        before = plain.get(test, ("failed", "not collected"))[0]
        if outcome == "failed":
            failing[message].append(test)
            if before == "passed":
                broken.append(test)
        elif outcome == "passed" and before == "failed":
            fixed.append(test)
    for test, (outcome, _) in plain.items():
        if outcome == "passed" and test not in with_fpt:
            broken.append(test + " (not collected with fpt)")
    return broken, fixed, failing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tests_dir", help="the tests/ folder of a detectron2 source tree")
    ap.add_argument("--out", help="keep the two JUnit XML files here")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = ap.parse_args()
    tests_dir = os.path.abspath(args.tests_dir)
    if not os.path.isdir(tests_dir):
        raise SystemExit(f"[detectron2_tests] {args.tests_dir}: not a folder")
    out = args.out or tempfile.mkdtemp(prefix="d2tests-")
    os.makedirs(out, exist_ok=True)
    plain = run(
        tests_dir, os.path.join(out, "without_fpt.xml"), False, args.timeout, args.pytest_args
    )
    with_fpt = run(
        tests_dir, os.path.join(out, "with_fpt.xml"), True, args.timeout, args.pytest_args
    )
    broken, fixed, failing = compare(plain, with_fpt)
    count = collections.Counter(o for o, _ in with_fpt.values())
    print(
        f"[detectron2_tests] with fpt: {count['passed']} passed, {count['failed']} failed, "
        f"{count['skipped']} skipped; fixed by fpt: {len(fixed)}; broken by fpt: {len(broken)}"
    )
    for test in broken:
        print(f"  BROKEN by fpt: {test}")
    for message, tests in sorted(failing.items(), key=lambda kv: -len(kv[1])):
        print(f"  failing with fpt ({len(tests)}): {message or '(no message)'}")
        for test in tests[:8]:
            print(f"      {test}")
        if len(tests) > 8:
            print(f"      ... and {len(tests) - 8} more")
    print(f"[detectron2_tests] JUnit XML in {out}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
