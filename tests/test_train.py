"""Runs as a user sees them: the run folder, TensorBoard events read back, atomic checkpoints,
resume, Ctrl-C, a non-finite loss, eval, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlgate import checkpoint as ckpt
from rlgate.config import TrainConfig
from rlgate.envs.match_report import probe_accuracy
from rlgate.evaluate import evaluate, task_report
from rlgate.metrics import episode_means
from rlgate.train import Trainer


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        env="rlgate/TMaze-v0",
        env_option=("length=3",),
        num_envs=8,
        unroll_length=16,
        total_timesteps=6 * 128,
        progress=False,
        logdir=str(tmp_path),
        run_name="run",
        gate_log_interval=2,
        checkpoint_interval=2,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlgate", *args], capture_output=True, text=True, cwd=cwd
    )


def test_run_folder_has_config_events_and_checkpoint(tmp_path):
    result = Trainer(_cfg(tmp_path)).run()
    run = result.run_dir
    saved = json.loads((run / "config.json").read_text())
    assert saved["core"] == "ur-lstm" and saved["env_option"] == ["length=3"]
    events = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (
        "charts/episodic_return",
        "charts/success_rate",
        "charts/episodic_length",
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clip_fraction",
        "losses/grad_norm",
        "charts/learning_rate",
        "perf/sps",
        "gates/saturated_fraction",
    ):
        assert tag in tags["scalars"], tag
    for tag in ("gates/f", "gates/r", "gates/g", "gates/timescale"):
        assert tag in tags["histograms"], tag
    assert "config/text_summary" in tags["tensors"]
    steps = [e.step for e in events.Scalars("perf/sps")]
    assert steps == [128 * (i + 1) for i in range(6)]
    data = ckpt.load(run)
    assert data["update"] == 6 and data["global_step"] == 768
    assert set(data["rng"]) == {"torch", "cuda", "actions"}
    assert set(data["env"]) == {"state", "generator"} and "obs" in data["rollout"]
    assert not list(run.glob(".checkpoint-*"))  # no temp file left behind


def test_resume_continues_the_same_run(tmp_path):
    first = Trainer(_cfg(tmp_path, total_timesteps=4 * 128)).run()
    assert first.updates == 4
    resumed = Trainer(_cfg(tmp_path, total_timesteps=8 * 128, resume=str(first.run_dir))).run()
    assert resumed.updates == 8 and resumed.global_step == 8 * 128
    assert resumed.run_dir == first.run_dir
    # the whole run's metrics: the first 4 updates' from the checkpoint, 4 new ones
    assert len(resumed.history) == 8 and resumed.history[:4] == first.history


def test_resume_refuses_another_core_or_a_missing_checkpoint(tmp_path):
    run = Trainer(_cfg(tmp_path, total_timesteps=128)).run().run_dir
    with pytest.raises(ckpt.CheckpointError, match="--core ur-lstm, not lstm"):
        Trainer(_cfg(tmp_path, core="lstm", resume=str(run)))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        Trainer(_cfg(tmp_path, resume=str(tmp_path / "missing")))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_finishes_the_update_and_saves(tmp_path, signum):
    """Ctrl-C or a scheduler's SIGTERM during an update: the update completes, a checkpoint
    is written at that step, and the run leaves cleanly."""
    trainer = Trainer(_cfg(tmp_path, checkpoint_interval=100))
    calls = {"n": 0}

    def collect(version):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signum)
        return trainer.worker.collect(version)

    result = trainer.run(collect)
    assert result.interrupted and result.signal == signal.Signals(signum).name
    assert result.updates == 4 and ckpt.load(result.run_dir)["update"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_second_interrupt_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    """Mid-update the state is half-updated: nothing is saved then, the last checkpoint (a
    state between two updates) stays as it was."""
    trainer = Trainer(_cfg(tmp_path, checkpoint_interval=2))
    calls = {"n": 0}

    def collect(version):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return trainer.worker.collect(version)

    result = trainer.run(collect)
    assert result.interrupted and result.updates == 3
    assert ckpt.load(result.run_dir)["update"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(_cfg(tmp_path, checkpoint_interval=2))
    calls = {"n": 0}

    def collect(version):
        calls["n"] += 1
        rollout, log = trainer.worker.collect(version)
        if calls["n"] == 4:
            rollout.rewards[0, 0] = float("nan")
        return rollout, log

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        trainer.run(collect)
    data = ckpt.load(trainer.run_dir)
    assert data["update"] == 2
    assert all(torch.isfinite(v).all() for v in data["model"].values())


def test_eval_reports_success_and_return(tmp_path):
    run = Trainer(_cfg(tmp_path, total_timesteps=2 * 128)).run().run_dir
    out = evaluate(str(run), episodes=20, num_envs=4, device="cpu")
    assert out["episodes"] == 20 and 0.0 <= out["success_rate"] <= 1.0
    greedy = evaluate(str(run), episodes=8, num_envs=4, device="cpu", greedy=True)
    assert greedy["episodes"] == 8
    proc = _cli("eval", str(run), "--episodes", "10", "--num-envs", "2")
    assert proc.returncode == 0 and "success rate" in proc.stdout


def test_choice_report_splits_success_by_where_the_cue_square_stands(tmp_path):
    """A policy rigged to always move up walks from its start below the middle square into it:
    it succeeds exactly when the cue's square is the middle one (position 1), whatever the
    colour, and its first choice action is up."""
    cfg = _cfg(
        tmp_path,
        env="rlgate/PassiveMatch-v0",
        env_option=("delay=2", "cue_steps=2"),
        total_timesteps=128,
    )
    run = Trainer(cfg).run().run_dir
    data = ckpt.load(run)
    data["model"]["policy.weight"].zero_()
    data["model"]["policy.bias"].copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))  # up
    ckpt.save(ckpt.checkpoint_path(run), data)
    out = task_report(str(run), episodes=90, num_envs=6, device="cpu", seed=5)
    assert out["episodes"] == 90
    assert {k: rate for k, (rate, _) in out["by_position"].items()} == {0: 0.0, 1: 1.0, 2: 0.0}
    assert sum(n for _, n in out["by_position"].values()) == 90
    assert sum(n for _, n in out["by_colour"].values()) == 90
    by_case = out["by_colour_and_position"]
    assert sum(n for _, n in by_case.values()) == 90
    assert all(rate == float(p == 1) for (_, p), (rate, _) in by_case.items())
    n_middle = out["by_position"][1][1]
    assert out["success_rate"] == pytest.approx(n_middle / 90)
    for probs in out["first_action"].values():
        assert probs[0] > 0.99
    assert out["gate"] == {}  # no view gate
    assert out["cue_seen"] == 1.0  # Passive Match shows the cue in every episode
    # the sweeps' per-run summary: the first of the cases at 0 (colour 0, leftmost square)
    assert out["headline"] == {
        "cue seen": 1.0,
        "memory probe": round(out["memory"], 3),
        "worst case": 0.0,
        "worst case is": "colour 0 at 0",
    }
    proc = _cli("eval", str(run), "--choices", "--episodes", "12", "--num-envs", "3")
    assert proc.returncode == 0 and "position of the cue square" in proc.stdout
    assert "cue seen: the cue phase showed the square in 1.00 of the episodes" in proc.stdout
    assert "view gate" not in proc.stdout
    tmaze = Trainer(_cfg(tmp_path, run_name="tmaze", total_timesteps=128)).run().run_dir
    proc = _cli("eval", str(tmaze), "--report")
    assert proc.returncode == 2 and "has no report of its own" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_choice_report_reads_the_view_gate_at_the_first_choice_step(tmp_path):
    """With --view-gate the report gives, per cue colour, the gate's mean per view channel at
    the first choice step: a gate rigged to constants reads back as their sigmoids."""
    cfg = _cfg(
        tmp_path,
        env="rlgate/PassiveMatch-v0",
        env_option=("delay=2", "cue_steps=2"),
        head_size=8,
        view_gate=True,
        total_timesteps=128,
    )
    run = Trainer(cfg).run().run_dir
    data = ckpt.load(run)
    bias = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0])  # floor, wall, apple, 3 colours
    data["model"]["gate.weight"].zero_()
    data["model"]["gate.bias"].copy_(bias)
    ckpt.save(ckpt.checkpoint_path(run), data)
    out = task_report(str(run), episodes=30, num_envs=6, device="cpu", seed=5)
    assert sorted(out["gate"]) == [0, 1, 2]
    for gate in out["gate"].values():
        torch.testing.assert_close(torch.tensor(gate), torch.sigmoid(bias))
    proc = _cli("eval", str(run), "--choices", "--episodes", "12", "--num-envs", "3")
    assert proc.returncode == 0 and "view gate at the first choice step" in proc.stdout
    assert "colour 2:  0.05  0.12  0.27  0.50  0.73  0.88" in proc.stdout
    assert 0.0 <= out["memory"] <= 1.0
    assert "memory: the cue's colour read from the core output" in proc.stdout


def test_probe_accuracy_reads_what_the_features_hold_and_nothing_else():
    """The memory probe: labels written into the features (one-hot plus noise, in a random
    basis) are read back on held-out samples; features independent of the labels give chance."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=g)
    basis = torch.randn(3, 16, generator=g)
    held = torch.nn.functional.one_hot(labels, 3).float() @ basis
    held = held + 0.3 * torch.randn(600, 16, generator=g)
    assert probe_accuracy(held, labels, 3) == 1.0
    unrelated = torch.randn(600, 16, generator=g)
    assert abs(probe_accuracy(unrelated, labels, 3) - 1 / 3) < 0.1
    # a bare constant: the probe can only guess one class
    assert probe_accuracy(torch.ones(600, 4), labels, 3) < 0.45
    assert math.isnan(probe_accuracy(torch.ones(1, 4), labels[:1], 3))  # too few samples


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--core", "nope"], "Expected one of ('lstm', 'c-lstm'"),
        (["train", "--env", "rlgate/Nope-v0"], "valid envs: rlgate/PassiveMatch-v0"),
        (["train", "--agent", "dqn"], "Expected one of ('ppo', 'impala')"),
        (["train", "--num-envs", "8", "--ppo.num-minibatches", "3"], "must divide"),
        (["train", "--core", "om-lstm", "--chunk-size", "5"], "chunk-size must divide"),
        (["train", "--view-gate"], "view-gate needs heads with a hidden layer"),
        (["train", "--policy-init-gain", "0"], "policy-init-gain must be finite and > 0"),
        (["train", "--ppo.vf-coef", "-1"], "ppo.vf-coef must be finite and >= 0"),
        (["train", "--ppo.ent-coef", "nan"], "ppo.ent-coef must be finite and >= 0"),
        (["train", "--impala.baseline-coef", "-0.5"], "impala.baseline-coef must be finite"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--num-envs", "abc"], "--num-envs"),
        (["train", "--resume", "/nonexistent/run"], "no checkpoint"),
        (["train", "--env", "rlgate/PassiveMatch-v0", "--delay", "-1"], "delay must be >= 0"),
        (["train", "--env-option", "length=abc"], "env option length takes int, got 'abc'"),
        (["train", "--env-option", "length=3.5"], "env option length takes int, got 3.5"),
        (["train", "--env-option", "success_reward=abc"], "success_reward takes float"),
        (["train", "--env", "rlgate/PassiveMatch-v0", "--delay", "abc"], "delay takes int"),
        (
            ["train", "--env", "rlgate/PassiveMatch-v0", "--env-option", "delay=abc"],
            "env option delay takes int, got 'abc'",
        ),
        (["train", "--env", "MiniGrid-MemoryS7-v0", "--env-option", "foo=1"], "'foo'"),
        (["train", "--env-option", "length=3", "--env-option", "length=4"], "given twice"),
        (["train", "--core", "c-lstm", "--chrono-t-max", "-5"], "chrono-t-max must be finite"),
        (["train", "--impala.num-actors", "2"], "--impala.num-actors: only for --agent impala"),
        (["train", "--agent", "impala", "--ppo.epochs", "2"], "--ppo.epochs: only for"),
        (["train", "--learning-rate", "0"], "learning-rate must be finite and > 0, got 0.0"),
        (["train", "--gamma", "1.5"], "gamma must be in (0, 1], got 1.5"),
        (["train", "--max-grad-norm", "-1"], "max-grad-norm must be finite and > 0, got -1.0"),
        (["train", "--run-name", "../x"], "run-name must be a plain folder name"),
        (["eval", "/nonexistent/run"], "no checkpoint"),
        (["frobnicate"], "valid commands: train, eval, cores, recipes"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'; valid recipes: tmaze, passive"),
        (["train", "--recipe"], "--recipe expects a value"),
        (["train", "--recipe", "tmaze", "--resume", "runs/x"], "--recipe starts a new run"),
        (["recipes", "nope"], "unknown recipe 'nope'; valid recipes: tmaze"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capfd, args, expected):
    """The CLI's entry point, called in this process (a subprocess per case would mostly time
    Python's start-up; the subprocess form is tested above and below)."""
    from rlgate import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--logdir", str(tmp_path)] if args[0] == "train" else list(args))
    err = capfd.readouterr().err
    assert exit_.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_episode_means_leave_out_what_does_not_apply():
    nan = float("nan")
    stats = {
        "return": torch.tensor([1.0, 3.0, 5.0]),
        "success": torch.tensor([1.0, 0.0, 1.0]),
        "success_at_0": torch.tensor([1.0, nan, nan]),
        "success_at_1": torch.tensor([nan, 0.0, 1.0]),
        "success_at_2": torch.tensor([nan, nan, nan]),
    }
    assert episode_means(stats) == pytest.approx(
        {
            "charts/episodic_return": 3.0,
            "charts/success_rate": 2 / 3,
            "charts/success_at_0": 1.0,
            "charts/success_at_1": 0.5,
        }
    )


def test_chunk_size_reaches_the_on_lstm_and_only_it(tmp_path):
    from rlgate.envs import make_vec
    from rlgate.train import build_model

    env = make_vec("rlgate/TMaze-v0", 2)
    model = build_model(_cfg(tmp_path, core="om-lstm", chunk_size=8), env)
    assert model.core.chunk_size == 8
    assert model.core.weight_hh.shape[0] == 4 * 64 + 2 * 64 // 8  # [i, f, u, o, f~, i~]
    other = build_model(_cfg(tmp_path, core="ur-lstm", chunk_size=8), env)  # ignored there
    assert other.core.weight_hh.shape[0] == 4 * 64


def test_cli_resume_with_another_core_is_refused_and_keeps_the_run(tmp_path):
    run = Trainer(_cfg(tmp_path, total_timesteps=128)).run().run_dir
    before = (run / ckpt.CHECKPOINT).read_bytes()
    proc = _cli("train", "--resume", str(run), "--core", "lstm")
    assert proc.returncode == 2 and "--core ur-lstm, not lstm" in proc.stderr
    assert (run / ckpt.CHECKPOINT).read_bytes() == before


def test_cli_trains_and_resumes(tmp_path):
    args = [
        "train",
        "--env-option",
        "length=3",
        "--num-envs",
        "8",
        "--unroll-length",
        "16",
        "--total-timesteps",
        "256",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "r",
        "--no-progress",
    ]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "done: 256 steps" in proc.stdout
    proc = _cli(
        "train", "--resume", str(tmp_path / "r"), "--total-timesteps", "512", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    assert ckpt.load(tmp_path / "r")["global_step"] == 512


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_logdir_that_cannot_hold_runs_is_one_line(tmp_path, where):
    path = tmp_path / "file"
    path.write_text("keep me")
    logdir = path if where == "a file" else path / "runs"
    proc = _cli("train", "--logdir", str(logdir), "--total-timesteps", "128")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--logdir" in proc.stderr
    assert path.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [path]


def test_every_env_option_is_kept(tmp_path):
    """Repeated --env-option flags (and several values after one) all reach the env."""
    proc = _cli("train", "--env-option", "length=3", "--num-envs", "8", "--env-option",
                "max_steps=9", "success_reward=2.0", "--unroll-length", "16",
                "--total-timesteps", "128", "--logdir", str(tmp_path), "--run-name", "r",
                "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["env_option"] == ["length=3", "max_steps=9", "success_reward=2.0"]
    assert saved["num_envs"] == 8


def test_a_diverging_run_without_a_checkpoint_says_so(tmp_path):
    """The first update's loss is NaN: no checkpoint exists, and the message says that."""
    proc = _cli("train", "--env-option", "length=3", "--num-envs", "8", "--unroll-length",
                "16", "--total-timesteps", "1280", "--learning-rate", "1e30",
                "--logdir", str(tmp_path), "--run-name", "r", "--no-progress")  # fmt: skip
    if proc.returncode == 0:
        pytest.skip("this learning rate did not diverge here")
    assert proc.returncode == 1 and "non-finite" in proc.stderr
    saved = (tmp_path / "r" / ckpt.CHECKPOINT).exists()
    assert ("no checkpoint was written yet" in proc.stderr) != saved


def test_delay_is_an_env_option_and_the_old_flag_still_works(tmp_path):
    proc = _cli("train", "--env", "rlgate/PassiveMatch-v0", "--delay", "2", "--env-option",
                "cue_steps=2", "--num-envs", "8", "--unroll-length", "16", "--total-timesteps",
                "128", "--logdir", str(tmp_path), "--run-name", "r", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["env_option"] == ["delay=2", "cue_steps=2"] and "delay" not in saved
    old = {**saved, "env_option": ["cue_steps=2"], "delay": 7}  # a config with the old field
    assert TrainConfig.from_dict(old).env_options == {"cue_steps": 2, "delay": 7}
