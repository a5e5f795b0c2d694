"""The reproduction sweep on a tiny grid: resumability, tables and figures."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from rlgate import checkpoint as ckpt
from rlgate import sweep, sweep_report
from rlgate.config import TrainConfig

pytest.importorskip("matplotlib")

TINY = sweep.Grid(
    cores=("lstm", "ur-lstm"),
    delays={"TMaze": (3,)},
    seeds=(1,),
    recipes={"TMaze": "tmaze"},
    settings={
        "total_timesteps": 256,
        "num_envs": 4,
        "unroll_length": 8,
        "hidden_size": 8,
        "encoder_size": 8,
    },
)


def _reproduce_main():
    path = Path(__file__).parents[1] / "scripts" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_steps_to_target():
    curve = [(100, 0.2), (200, 0.95), (300, 0.5), (400, 1.0)]
    assert sweep_report.steps_to(curve, 0.9, window=1) == 200
    assert sweep_report.steps_to(curve, 1.0, window=1) == 400
    assert sweep_report.steps_to(curve[:1], 0.9, window=1) is None
    # averaged over a window: one lucky point early on does not count
    assert sweep_report.steps_to(curve, 0.75, window=2) == 400  # (0.5 + 1.0) / 2
    assert sweep_report.steps_to(curve, 0.5, window=2) == 200  # (0.2 + 0.95) / 2


def test_the_full_preset_is_the_papers_grid():
    full = sweep.PRESETS["full"]
    assert set(full.cores) == set(sweep.PAPER_CORES) and len(full.cores) == 8
    assert set(full.delays) == {"PassiveMatch", "ActiveMatch", "TMaze"}
    assert all(len(d) >= 3 and list(d) == sorted(d) for d in full.delays.values())
    assert len(full.seeds) >= 3
    assert len(full.runs()) == 8 * 9 * len(full.seeds)


def test_reward_scales_entropy_and_budget_are_per_task_and_the_same_for_every_core(tmp_path):
    grid = sweep.PRESETS["full"]
    scales, ents, budgets = {}, {}, {}
    for run in grid.runs():
        cfg = sweep.train_config(grid, run, tmp_path)
        scales.setdefault(run.task, set()).add(cfg.reward_scale)
        ents.setdefault(run.task, set()).add(cfg.ppo.ent_coef)
        budgets.setdefault(run.task, set()).add(cfg.total_timesteps)
        assert (cfg.head_size, cfg.unroll_length, cfg.num_envs) == (64, 128, 32)
        assert (cfg.view_gate, cfg.policy_init_gain, cfg.ppo.vf_coef) == (True, 1.0, 0.5)
    assert scales == {"PassiveMatch": {0.1}, "ActiveMatch": {0.1}, "TMaze": {1.0}}
    assert ents == {"PassiveMatch": {0.03}, "ActiveMatch": {0.03}, "TMaze": {0.01}}
    assert budgets == {"PassiveMatch": {1_500_000}, "ActiveMatch": {1_500_000}, "TMaze": {250_000}}
    # --total-timesteps sets every task's budget
    one = sweep.with_budget(grid, 1234, None)
    assert {sweep.train_config(one, r, tmp_path).total_timesteps for r in one.runs()} == {1234}


def test_the_full_preset_builds_the_configs_its_committed_runs_ran_with():
    """docs/results/full holds what each run of the paper's grid trained with: the grid built
    from the recipes gives each of them the same config."""
    out = Path(__file__).parents[1] / "docs" / "results" / "full"
    grid = sweep.PRESETS["full"]
    records = sweep_report.load_results(out)
    assert len(records) == len(grid.runs())
    for r in records:
        run = sweep.Run(r["task"], r["delay"], r["core"], r["seed"])
        cfg = sweep.train_config(grid, run, Path("docs/results/full"))
        # those runs wrote no checkpoint until their end; checkpoints change nothing trained (a
        # resumed run is the uninterrupted one: tests/test_runs.py)
        ran = TrainConfig.from_dict(r["config"])
        ran = replace(ran, checkpoint_interval=cfg.checkpoint_interval)
        assert cfg == ran, run.name


def test_sweep_resumes_and_writes_tables_and_figures(tmp_path):
    assert sweep.run_sweep(TINY, tmp_path, jobs=1, progress=False) == 2
    results = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert results == ["TMaze-d3__lstm__s1.json", "TMaze-d3__ur-lstm__s1.json"]
    record = json.loads((tmp_path / "results" / results[1]).read_text())
    assert record["steps"] == 256 and record["core"] == "ur-lstm"
    # g of every unit at every step of one unroll: 8 steps x 4 envs x 8 units
    assert sum(record["gate_hist"]) == 8 * 4 * 8
    # where it came from: this checkout's commit, torch, one thread per run
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(sweep.__file__).parent,
        capture_output=True,
        text=True,
    )
    want = head.stdout.strip() if head.returncode == 0 else None
    assert record["provenance"]["commit"] == want
    assert record["provenance"]["torch"] == torch.__version__
    assert record["provenance"]["threads"] == 1
    # tensorboard: one folder per task and delay, one run per core and seed
    assert sorted(p.name for p in (tmp_path / "tb" / "TMaze-d3").iterdir()) == [
        "lstm-s1",
        "ur-lstm-s1",
    ]

    # nothing left to do; a run killed before its first checkpoint is redone, from scratch
    assert sweep.run_sweep(TINY, tmp_path, jobs=1, progress=False) == 0
    (tmp_path / "results" / results[0]).unlink()
    folder = tmp_path / "tb" / "TMaze-d3" / "lstm-s1"
    (folder / "checkpoint.pt").unlink()
    stale = folder / "stale.txt"
    stale.write_text("from the killed run")
    assert sweep.run_sweep(TINY, tmp_path, jobs=1, progress=False) == 1
    assert not stale.exists()

    rows = sweep_report.summarize(sweep_report.load_results(tmp_path))
    assert [(r["task"], r["delay"], r["core"]) for r in rows] == [
        ("TMaze", 3, "lstm"),
        ("TMaze", 3, "ur-lstm"),
    ]
    csv_path, md_path = sweep_report.write_tables(rows, tmp_path)
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and float(table[1]["final_success_mean"]) == pytest.approx(
        rows[1]["final_success_mean"]
    )
    assert md_path.read_text().count("| TMaze | 3 |") == 2
    for png in sweep_report.write_plots(sweep_report.load_results(tmp_path), tmp_path):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "curves_TMaze.png",
        "success_vs_delay.png",
        "gates.png",
    }


def _killed_at(trainer, update: int):
    """A collect that dies (KeyboardInterrupt, no stop signal) in the given update."""
    calls = {"n": 0}

    def collect(version):
        calls["n"] += 1
        if calls["n"] == update:
            raise KeyboardInterrupt
        return trainer.worker.collect(version)

    return collect


def test_a_killed_run_continues_from_its_checkpoint_as_the_same_run(tmp_path, monkeypatch):
    """A sweep killed in a run's sixth update (its checkpoints: every 2 updates) continues it
    from update 4 and writes the uninterrupted run's result; a run folder holding another
    config's checkpoint starts over."""
    from rlgate.train import Trainer

    monkeypatch.setattr(sweep, "CHECKPOINT_STEPS", 2 * 4 * 8)  # two updates of 4 envs x 8 steps
    grid = replace(TINY, cores=("ur-lstm",), greedy_episodes=8)
    (run,) = grid.runs()
    assert sweep.run_sweep(grid, tmp_path / "whole", jobs=1, progress=False) == 1

    cut = tmp_path / "cut"
    trainer = Trainer(sweep.train_config(grid, run, cut))
    assert trainer.run(_killed_at(trainer, 6)).interrupted
    assert ckpt.load(trainer.run_dir)["update"] == 4
    kept = trainer.run_dir / "kept.txt"  # the folder is continued, not wiped
    kept.write_text("from the killed sweep")
    assert sweep.run_sweep(grid, cut, jobs=1, progress=False) == 1
    assert kept.exists()

    other = tmp_path / "other"  # the same run folder, trained with another learning rate
    changed = replace(sweep.train_config(grid, run, other), learning_rate=1e-2)
    folder = Trainer(changed).run().run_dir
    (folder / "kept.txt").write_text("from another config")
    assert sweep.run_sweep(grid, other, jobs=1, progress=False) == 1
    assert not (folder / "kept.txt").exists()

    def result(out):
        record = json.loads((out / "results" / f"{run.name}.json").read_text())
        config = {k: v for k, v in record["config"].items() if k != "logdir"}
        keys = ("steps", "curve", "final_success", "gate_hist", "greedy_success")
        return [record[k] for k in keys] + [config]

    whole = result(tmp_path / "whole")
    assert len(whole[1]) == 8
    assert result(cut) == whole
    assert result(other) == whole


def test_summary_statistics_over_seeds():
    def rec(seed, final, reached):
        curve = [(s * 10, 1.0 if reached is not None and s * 10 >= reached else 0.0)
                 for s in range(1, 50)]  # fmt: skip
        return {"task": "T", "delay": 1, "core": "lstm", "seed": seed, "final_success": final,
                "curve": curve, "steps": 490}  # fmt: skip

    rows = sweep_report.summarize([rec(1, 1.0, 100), rec(2, 0.5, None), rec(3, 0.0, 300)])
    assert rows[0]["final_success_mean"] == 0.5
    assert rows[0]["final_success_std"] == pytest.approx(0.4082, abs=1e-4)
    # a 10-update average first reaches 0.9 when nine of its ten points are 1.0: 180 and 380
    assert rows[0]["steps_to_0.9_mean"] == 280 and rows[0]["seeds_reaching_0.9"] == 2
    assert rows[0]["env_steps"] == 490  # each run's budget, in the table


def test_success_over_training_is_the_mean_over_env_steps():
    # each point is the success of the update that ended at that env step; a plain loop over
    # every env step of the budget
    curve = [(100, 0.0), (200, 0.5), (400, 1.0), (500, 0.25)]
    per_step, start = [], 0
    for end, value in curve:
        per_step += [value] * (end - start)
        start = end
    assert sweep_report.curve_mean(curve) == pytest.approx(sum(per_step) / len(per_step))
    # learned sooner, the same final success: a higher score
    late = [(100 * i, 0.0 if i < 8 else 1.0) for i in range(1, 11)]
    early = [(100 * i, 0.0 if i < 3 else 1.0) for i in range(1, 11)]
    assert sweep_report.curve_mean(early) == pytest.approx(0.8)
    assert sweep_report.curve_mean(late) == 0.3


def test_parallel_sweep_and_the_script(tmp_path, capsys):
    grid = sweep.Grid(**{**TINY.__dict__, "seeds": (1, 2), "cores": ("gru",)})
    assert sweep.run_sweep(grid, tmp_path, jobs=2, progress=False) == 2
    main = _reproduce_main()
    assert main(["--out", str(tmp_path), "--report-only"]) == 0
    printed = capsys.readouterr().out
    assert "| TMaze | 3 | gru |" in printed
    # what the table comes from: the preset's grid (small: 2 cores x 2 lengths x 2 seeds)
    assert "- runs finished: 0 of 8 " in printed and "runs per commit: -" in printed
    lines = sweep_report.describe(grid, sweep_report.load_results(tmp_path))
    assert lines[0].startswith("- runs finished: 2 of 2 (1 cores x 1 task-delays x 2 seeds)")
    commit = sweep.provenance()["commit"]
    assert f"`{(commit or 'unknown')[:10]}" in lines[3] and lines[3].endswith(" 2")
    assert main(["--out", str(tmp_path / "empty"), "--report-only"]) == 2


def test_the_active_match_preset_trains_the_recipe_for_every_core(tmp_path):
    grid = sweep.PRESETS["active-match"]
    assert {"ur-lstm", "lstm", "gru", "ur-gru", "mlp"} == set(grid.cores)
    assert grid.delays == {"ActiveMatch": (15, 30, 5)} and len(grid.seeds) == 5
    assert grid.greedy_episodes >= 500
    configs = {}
    for run in grid.runs():
        cfg = sweep.train_config(grid, run, tmp_path)
        assert (cfg.core, cfg.seed, cfg.env_options["delay"]) == (run.core, run.seed, run.delay)
        configs.setdefault(
            (cfg.seen_loss, cfg.view_pool, cfg.ppo.ent_coef, cfg.total_timesteps), set()
        ).add(run.name)
    assert list(configs) == [(1.0, True, 0.05, 6_000_000)]  # the same agent and budget for all


def test_a_greedy_evaluation_per_run_and_its_columns(tmp_path):
    """Each run's greedy success is the evaluation of its checkpoint with the most likely
    actions; the memoryless control has no gates to histogram; the tables gain the columns."""
    from rlgate.evaluate import evaluate

    grid = sweep.Grid(**{**TINY.__dict__, "cores": ("mlp", "gru"), "greedy_episodes": 20})
    assert sweep.run_sweep(grid, tmp_path, jobs=1, progress=False) == 2
    for core in ("mlp", "gru"):
        record = json.loads((tmp_path / "results" / f"TMaze-d3__{core}__s1.json").read_text())
        again = evaluate(
            str(tmp_path / "tb" / "TMaze-d3" / f"{core}-s1"), 20, device="cpu", seed=10_001,
            greedy=True,
        )  # fmt: skip
        assert record["greedy_success"] == again["success_rate"]
        assert (record["gate_hist"] == []) == (core == "mlp")
    rows = sweep_report.summarize(sweep_report.load_results(tmp_path))
    assert all("greedy_success_mean" in r for r in rows)
    _, md_path = sweep_report.write_tables(rows, tmp_path)
    assert "greedy success (mean ± std)" in md_path.read_text()
    sweep_report.write_plots(sweep_report.load_results(tmp_path), tmp_path)


def test_greedy_summary_counts_the_seeds_at_the_target():
    def rec(seed, greedy):
        return {"task": "T", "delay": 1, "core": "lstm", "seed": seed, "final_success": 0.5,
                "curve": [(10, 0.5)], "steps": 10, "greedy_success": greedy}  # fmt: skip

    (row,) = sweep_report.summarize([rec(1, 0.95), rec(2, 0.9), rec(3, 0.3)])
    assert row["greedy_success_mean"] == pytest.approx(0.7167, abs=1e-4)
    assert row["greedy_success_std"] == pytest.approx(0.2953, abs=1e-4)  # population std
    assert (row["greedy_seeds_at_0_9"], row["greedy_seeds"]) == (2, 3)
    without = {k: v for k, v in rec(1, 0.0).items() if k != "greedy_success"}
    assert "greedy_success_mean" not in sweep_report.summarize([without])[0]


def test_a_task_report_per_run_its_table_and_the_backfill(tmp_path, capsys):
    """A grid with report_episodes records each run's report (the task's own, on the run's
    checkpoint: the same as ``rlgate.evaluate.task_report`` with the sweep's seed); the
    results page gains the per-run table; runs that ended without one gain it later from
    their checkpoints, and those whose folder is gone are named."""
    from rlgate.evaluate import task_report

    settings = {**TINY.settings, "head_size": 8, "env_option": ("cue_steps=2",)}
    grid = sweep.Grid(
        cores=("mlp", "gru"),
        delays={"PassiveMatch": (2,)},
        seeds=(1,),
        recipes={"PassiveMatch": "passive-match"},
        settings=settings,
        report_episodes=12,
    )
    assert sweep.run_sweep(grid, tmp_path, jobs=1, progress=False) == 2
    results = tmp_path / "results"
    for core in ("mlp", "gru"):
        record = json.loads((results / f"PassiveMatch-d2__{core}__s1.json").read_text())
        again = task_report(
            str(tmp_path / "tb" / "PassiveMatch-d2" / f"{core}-s1"), 12, device="cpu",
            seed=20_001, greedy=True,
        )  # fmt: skip
        assert record["report"] == {"headline": again["headline"], "lines": again["lines"]}
        assert set(again["headline"]) == {"cue seen", "memory probe", "worst case", "worst case is"}
    lines = sweep_report.run_table(sweep_report.load_results(tmp_path))
    assert lines[2] == (
        "| task | delay | core | seed | final success | greedy success | cue seen | "
        "memory probe | worst case | worst case is |"
    )
    assert [line.split(" | ")[2] for line in lines[4:]] == ["gru", "mlp"]  # the paper's order
    # a run that ended before its grid asked for reports gains one from its checkpoint
    path = results / "PassiveMatch-d2__gru__s1.json"
    full = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in full.items() if k != "report"}))
    assert sweep.add_reports(grid, tmp_path) == (1, [])
    assert json.loads(path.read_text()) == full
    assert sweep.add_reports(grid, tmp_path) == (0, [])  # nothing left to add
    path.write_text(json.dumps({k: v for k, v in full.items() if k != "report"}))
    shutil.rmtree(tmp_path / "tb" / "PassiveMatch-d2" / "gru-s1")
    assert sweep.add_reports(grid, tmp_path) == (0, ["PassiveMatch-d2__gru__s1"])
    main = _reproduce_main()
    assert main(["--preset", "small", "--out", str(tmp_path), "--add-reports"]) == 2
    assert "preset small has no task report" in capsys.readouterr().err


def test_a_second_sweep_on_the_same_folder_is_refused_and_touches_nothing(tmp_path, capsys):
    """Two sweeps on one folder would start over each other's runs in flight: while one holds
    the folder's lock, another stops with a one-line error (exit 2), writing nothing."""
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / sweep.LOCK, "a") as held:  # the running sweep
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(sweep.SweepBusy, match="another sweep is running"):
            sweep.run_sweep(TINY, tmp_path, jobs=1, progress=False)
        main = _reproduce_main()
        assert main(["--preset", "small", "--out", str(tmp_path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("reproduce: error: another sweep is running") and err.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [sweep.LOCK]
    # once it has ended, a sweep runs
    assert sweep.run_sweep(TINY, tmp_path, jobs=1, progress=False) == 2


@dataclass(frozen=True)
class _Stopping:
    """A sweep of eight runs: "a" is stopped (KeyboardInterrupt, as Ctrl-C stops a run), the
    others take half a second and write a result."""

    def runs(self):
        return list("abcdefgh")

    def run(self, run, out):
        import time

        time.sleep(0.3 if run == "a" else 0.5)
        if run == "a":
            raise KeyboardInterrupt
        (out / "results" / f"{run}.json").write_text("{}")
        return {}

    @staticmethod
    def headline(record):
        return ""


def test_a_stopped_parallel_sweep_starts_no_more_runs(tmp_path, monkeypatch):
    """Ctrl-C stops every run in flight; the sweep must then start none of those queued behind
    them (they are pending for the next sweep), not go on through the list."""
    monkeypatch.setattr(sweep, "pending", lambda grid, out: grid.runs())
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(_Stopping(), tmp_path, jobs=2, progress=False)
    # "b" was in flight beside "a" and ends; nothing else started
    assert sorted(p.stem for p in (tmp_path / "results").iterdir()) == ["b"]


def _naive_permutation_p(a, b):
    """Every split of the pooled values, the difference of means of each, plainly."""
    pooled, count, extreme = a + b, 0, 0
    observed = abs(sum(a) / len(a) - sum(b) / len(b))
    for first in itertools.combinations(range(len(pooled)), len(a)):
        x = [pooled[i] for i in first]
        y = [pooled[i] for i in range(len(pooled)) if i not in first]
        count += 1
        extreme += abs(sum(x) / len(x) - sum(y) / len(y)) >= observed - 1e-12
    return extreme / count


def test_permutation_test_against_every_split_written_plainly(monkeypatch):
    # by hand: of the 6 splits of 1, 2, 3, 4 into pairs, {1, 2} | {3, 4} and its mirror are as
    # far apart as the observed one
    assert sweep_report.permutation_p([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1 / 3)
    assert sweep_report.permutation_p([10, 11, 12, 13, 14], [0, 1, 2, 3, 4]) == pytest.approx(
        2 / 252
    )
    gen = torch.Generator().manual_seed(0)
    for n, m in [(5, 5), (3, 4), (2, 6)]:
        a = torch.rand(n, generator=gen).tolist()
        b = (torch.rand(m, generator=gen) + 0.2).tolist()
        assert sweep_report.permutation_p(a, b) == pytest.approx(_naive_permutation_p(a, b))
    # above the exact limit: random splits, close to every split's answer
    monkeypatch.setattr(sweep_report, "EXACT_SPLITS_MAX_VALUES", 6)
    monkeypatch.setattr(sweep_report, "RANDOM_SPLITS", 20_000)
    a, b = [0.9, 0.7, 0.95, 0.8], [0.6, 0.85, 0.5, 0.65]
    assert sweep_report.permutation_p(a, b) == pytest.approx(_naive_permutation_p(a, b), abs=0.01)


def test_pair_table_compares_each_core_with_its_familys_plain_core():
    def rec(core, seed, greedy):
        return {"task": "T", "delay": 3, "core": core, "seed": seed, "final_success": 0.0,
                "greedy_success": greedy}  # fmt: skip

    records = [rec("lstm", s, v) for s, v in enumerate([0.5, 0.6, 0.55], 1)]
    records += [rec("ur-lstm", s, v) for s, v in enumerate([0.9, 0.95, 0.85], 1)]
    records += [rec("mlp", s, 0.33) for s in (1, 2, 3)]  # no plain core of its family
    records += [rec("ur-gru", s, 0.9) for s in (1, 2, 3)]  # gru did not run
    lines = sweep_report.pair_table(records)
    assert lines[-1] == "| T | 3 | ur-lstm | lstm | 3 / 3 | +0.350 | 0.100 |"  # 2 of 20 splits
    assert len([line for line in lines if line.startswith("| T |")]) == 1
    assert sweep_report.pair_table([rec("lstm", 1, 0.5)]) == []
