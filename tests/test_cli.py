"""The command line: listing, and bad input as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from rlgate.cores import CORES


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlgate", *args], capture_output=True, text=True)


def test_cores_lists_every_preset_and_alias():
    proc = _run("cores")
    assert proc.returncode == 0
    for name in CORES:
        assert name in proc.stdout


def test_bad_command_is_one_line_exit_2():
    proc = _run("nope")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "valid commands: train, eval, cores" in proc.stderr
    assert "Traceback" not in proc.stderr
