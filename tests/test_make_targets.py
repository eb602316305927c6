"""`make test` itself: a suite that collects nothing must fail (pytest's exit code 5 is not a pass)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("exit_code, passes", [(5, False), (0, True), (1, False)])
def test_make_test_fails_when_pytest_collects_nothing(tmp_path: Path, exit_code: int, passes: bool) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    fake_python.chmod(0o755)
    # -o: take the install step as done, so only the test recipe runs (with the fake interpreter).
    done = subprocess.run(
        ["make", "-s", "-o", "install", "test", f"PY={fake_python}"], cwd=REPO, capture_output=True, text=True
    )
    assert (done.returncode == 0) is passes, done.stderr
    if exit_code == 5:
        assert "collected no tests" in done.stderr
