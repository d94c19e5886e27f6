"""The real-port tests' reruns (tests/conftest.py): a session in which improv sent notes and
nothing at all arrived fails at once; another failure is rerun, and each rerun is listed with
its cause at the end of the report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_rerunfailures")

ROOT = Path(__file__).resolve().parents[1]
CASES = '''
import pytest
from benchmarks.harness.notes import silence

@pytest.mark.jack
def test_silent():
    assert False, f"{silence(5, [])}no answer"

@pytest.mark.jack
def test_lossy():
    assert False, f"{silence(5, [(0.0, [0x90, 60, 1])])}no answer"
'''


def test_a_silent_session_is_not_rerun_and_reruns_say_why(tmp_path):
    cases = tmp_path / "test_cases.py"
    cases.write_text(CASES)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
                          "--rootdir", str(ROOT), "-p", "no:cacheprovider", str(cases)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = run.stdout
    assert "2 failed, 2 rerun" in out, out[-2000:]
    listed = out.split("reruns, with their cause")[-1].split("short test summary")[0]
    assert listed.count("::test_lossy: AssertionError: no answer") == 2, out[-2000:]
    assert "test_silent" not in listed, out[-2000:]
