"""A run as a unit: a resumed run is the same run, runs never share or overwrite a folder,
signals stop a run with a checkpoint, actors die with their learner, checkpoints load
without running code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlgate import checkpoint as ckpt
from rlgate.config import TrainConfig
from rlgate.train import Trainer


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        env="rlgate/TMaze-v0",
        env_option=("length=3",),
        num_envs=8,
        unroll_length=16,
        total_timesteps=8 * 128,
        progress=False,
        logdir=str(tmp_path),
        gate_log_interval=3,
        checkpoint_interval=2,
        seed=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def _scalars(run, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _interrupting(trainer: Trainer, at: int, how):
    """A collect that, on its ``at``-th call, sends a signal (``how`` an int) or raises
    KeyboardInterrupt (``how`` None: the run dies there, as under kill -9, with what it has
    written so far)."""
    calls = {"n": 0}

    def collect(version):
        calls["n"] += 1
        if calls["n"] == at:
            if how is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), how)
        return trainer.worker.collect(version)

    return collect


@pytest.mark.parametrize("agent", ["ppo", "impala"])
@pytest.mark.parametrize("how", ["sigterm", "killed"])
def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, agent, how):
    """Stopped by SIGTERM (checkpoint at the stop) or killed after update 5 (checkpoint of
    update 4, update 5 already logged), then resumed: every parameter, optimizer moment and
    logged loss equals the uninterrupted run's, bit for bit, and TensorBoard holds every step
    once."""
    whole = Trainer(_cfg(tmp_path, agent=agent, run_name="whole")).run()
    trainer = Trainer(_cfg(tmp_path, agent=agent, run_name="cut"))
    at, sig = (3, signal.SIGTERM) if how == "sigterm" else (6, None)
    cut = trainer.run(_interrupting(trainer, at, sig))
    assert cut.interrupted
    saved = ckpt.load(cut.run_dir)["update"]
    assert saved == (3 if how == "sigterm" else 4)
    resumed = Trainer(_cfg(tmp_path, agent=agent, resume=str(cut.run_dir))).run()
    assert resumed.updates == 8

    # the result holds the whole run, the updates before the resume included
    def metrics(result):
        return [{k: v for k, v in h.items() if not k.startswith("perf/")} for h in result.history]

    assert len(resumed.history) == 8
    assert metrics(resumed) == metrics(whole)

    a, b = ckpt.load(whole.run_dir), ckpt.load(cut.run_dir)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for key, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    for tag in ("losses/policy", "losses/value", "charts/episodic_return", "charts/learning_rate"):
        assert _scalars(cut.run_dir, tag) == _scalars(whole.run_dir, tag), tag
    assert [s for s, _ in _scalars(cut.run_dir, "perf/sps")] == [128 * k for k in range(1, 9)]


def test_resume_of_a_finished_run_has_nothing_to_do(tmp_path):
    run = Trainer(_cfg(tmp_path, run_name="r", total_timesteps=256)).run().run_dir
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "rlgate", "train", "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout and "256 steps" in proc.stdout
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


def test_runs_started_together_get_their_own_folders(tmp_path, monkeypatch):
    """The default folder name has one-second resolution: runs started in the same second
    (here: the same frozen clock) still get a folder each."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    dirs = [Trainer(_cfg(tmp_path, total_timesteps=128)).run_dir for _ in range(3)]
    assert len(set(dirs)) == 3
    assert [d.name[-2:] for d in dirs[1:]] == ["-2", "-3"]


def test_two_cli_runs_at_once_never_share_a_folder(tmp_path):
    args = [sys.executable, "-m", "rlgate", "train", "--env-option", "length=3",
            "--num-envs", "8", "--unroll-length", "16", "--total-timesteps", "128",
            "--logdir", str(tmp_path), "--no-progress"]  # fmt: skip
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2
    for run in runs:
        assert ckpt.load(run)["global_step"] == 128


def test_an_existing_run_is_never_overwritten(tmp_path):
    run = Trainer(_cfg(tmp_path, run_name="r", total_timesteps=128)).run().run_dir
    before = (run / ckpt.CHECKPOINT).read_bytes()
    with pytest.raises(ValueError, match="exists: continue it with --resume"):
        Trainer(_cfg(tmp_path, run_name="r", total_timesteps=128))
    assert (run / ckpt.CHECKPOINT).read_bytes() == before


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "", ".hidden", "a\\b"])
def test_run_names_are_plain_names(tmp_path, name):
    with pytest.raises(ValueError, match="run-name must be a plain folder name"):
        _cfg(tmp_path, run_name=name)


def test_sigterm_from_outside_checkpoints_and_exits_143(tmp_path):
    """What a scheduler or `timeout` does: SIGTERM to a running `rlgate train`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlgate", "train", "--env-option", "length=3",
         "--num-envs", "8", "--unroll-length", "16", "--total-timesteps", "100000000",
         "--checkpoint-interval", "1000000", "--logdir", str(tmp_path), "--run-name", "r",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    events = tmp_path / "r"
    deadline = time.monotonic() + 120
    while not list(events.glob("events.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # a few updates in
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in out
    data = ckpt.load(tmp_path / "r")
    assert data["global_step"] > 0 and data["global_step"] % 128 == 0


def test_checkpoints_load_as_weights_only(tmp_path):
    """Everything a checkpoint holds passes torch's weights-only unpickler, so a downloaded
    checkpoint can't run code; a checkpoint that needs more is refused."""
    run = Trainer(_cfg(tmp_path, run_name="r", total_timesteps=128)).run().run_dir
    data = torch.load(run / ckpt.CHECKPOINT, weights_only=True)
    assert data["global_step"] == 128

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"model": {}, "config": {}, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        ckpt.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_actors_die_with_their_learner(tmp_path):
    """kill -9 of an IMPALA learner with two actor processes: the actors exit too."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlgate", "train", "--agent", "impala",
         "--impala.num-actors", "2", "--impala.envs-per-actor", "4", "--env-option",
         "length=3", "--unroll-length", "16", "--total-timesteps", "100000000",
         "--logdir", str(tmp_path), "--run-name", "r", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    children: list[int] = []
    while time.monotonic() < deadline:
        children = _children(proc.pid)
        if len(children) >= 2 and list((tmp_path / "r").glob("events.*")):
            break
        time.sleep(0.2)
    assert len(children) >= 2, "the actors did not start"
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [c for c in children if _alive(c)]
    for c in alive:
        os.kill(c, signal.SIGKILL)
    assert not alive, "actor processes outlived their learner"


def _children(pid: int) -> list[int]:
    """The actor processes of ``pid``: its children started by multiprocessing's spawn (Linux
    /proc; multiprocessing's resource tracker is left out)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in cmdline:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
