"""`make test` runs pytest through herald.testrun: a failing test and an empty run both fail."""

import subprocess
import sys
from pathlib import Path


def _run(path: Path) -> int:
    argv = [sys.executable, "-m", "herald.testrun", str(path), "-q", "-p", "no:cacheprovider"]
    return subprocess.run(argv, capture_output=True, cwd=path, timeout=120).returncode


def test_no_test_collected_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("x = 1\n")
    assert _run(tmp_path) == 1


def test_a_failing_test_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_fail.py").write_text("def test_fail():\n    assert 1 == 2\n")
    assert _run(tmp_path) == 1


def test_a_passing_run_passes(tmp_path: Path) -> None:
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    assert _run(tmp_path) == 0
