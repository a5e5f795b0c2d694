"""scripts/bench_envs.py: every clone is measured next to the env it copies, with valid actions."""

import importlib.util
from pathlib import Path

import pytest

from rlgate.envs import POPGYM, make_vec

pytest.importorskip("popgym")
ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("bench_envs", ROOT / "scripts/bench_envs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_popgym_clone_has_its_reference_and_steps_under_random_actions():
    bench = _script()
    for name in POPGYM:
        task = f"rlgate/popgym-{name}Easy-v0"
        assert task in bench.REFERENCES
        env = make_vec(task, 4, seed=0)
        env.reset()
        for actions in bench.random_actions(env.single_action_space, 4, 3, "cpu"):
            env.step(actions)  # a ValueError here: an action outside the space


def test_a_short_run_prints_the_table_and_the_target(capsys):
    bench = _script()
    argv = ["--tasks", "rlgate/popgym-RepeatFirstEasy-v0", "--num-envs", "4", "1024",
            "--sync-envs", "2", "--async-envs", "2", "--seconds", "0.05"]  # fmt: skip
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "popgym-RepeatFirstEasy-v0" in out and "# target: every clone at N=1024" in out


def test_rounds_keep_each_cases_fastest(capsys, monkeypatch):
    bench = _script()
    speeds = iter([100.0, 300.0, 200.0, 1e6])  # round 1: sync 2, async 2; then async 2 only
    monkeypatch.setattr(bench, "gymnasium_rate", lambda *a: next(speeds))
    clone = iter([5e6, 9e7, 2e7])
    monkeypatch.setattr(bench, "tensor_rate", lambda *a: next(clone))
    argv = ["--tasks", "rlgate/popgym-RepeatFirstEasy-v0", "--num-envs", "1024",
            "--sync-envs", "2", "--async-envs", "2", "--rounds", "3"]  # fmt: skip
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "1,000,000 (async N=2)" in out and "90,000,000" in out and "90.0x" in out
    assert bench.main([*argv[:-1], "0"]) == 2


def test_paths_compares_the_native_and_pytorch_paths(capsys):
    bench = _script()
    argv = ["--paths", "--tasks", "rlgate/ActiveMatch-v0", "rlgate/TMaze-v0", "--num-envs", "4",
            "--seconds", "0.05"]  # fmt: skip
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "ActiveMatch-v0" in out and "PyTorch path steps/s" in out and "TMaze" not in out
    assert bench.main(["--paths", "--tasks", "rlgate/TMaze-v0", "--seconds", "0.05"]) == 2
    assert "none of these tasks has a native path" in capsys.readouterr().err
