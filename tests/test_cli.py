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


def test_a_backend_that_cannot_run_is_bad_input(tmp_path):
    """--backend native without a C compiler: one line naming the reason, exit 2, and nothing
    written (the run folder is not created)."""
    import os

    env = {**os.environ, "CC": str(tmp_path / "no-cc"), "RLGATE_CACHE_DIR": str(tmp_path / "c")}
    logdir = tmp_path / "runs"
    args = ["train", "--backend", "native", "--env", "rlgate/TMaze-v0", "--logdir", str(logdir)]
    proc = subprocess.run(
        [sys.executable, "-m", "rlgate", *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "backend='native' is unavailable here" in proc.stderr
    assert "no-cc" in proc.stderr and "Traceback" not in proc.stderr
    assert not logdir.exists()


def test_version_and_the_eval_positional_name():
    from rlgate import __version__

    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"rlgate {__version__}"
    usage = _run("eval", "--help").stdout.splitlines()[0]
    assert usage.endswith("RUN") and "STR" not in usage


def test_a_run_shorter_than_an_episode_says_no_episode_ended(tmp_path):
    # TMaze at length 8 ends its episodes within 20 steps; at length 200 one unroll ends none
    args = ["train", "--env", "rlgate/TMaze-v0", "--env-option", "length=200", "--num-envs", "4",
            "--unroll-length", "8", "--total-timesteps", "16", "--hidden-size", "8",
            "--encoder-size", "8", "--no-progress", "--logdir", str(tmp_path)]  # fmt: skip
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "no episode ended yet" in proc.stdout and "nan" not in proc.stdout
