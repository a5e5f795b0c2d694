"""The paper's comparison as a resumable sweep: cores x tasks x delays x seeds (driven by
scripts/reproduce.py; its tables and figures: ``rlgate.sweep_report``).

Every run trains its task's recipe (``rlgate.recipes``) with the grid's settings over it: the
same agent, hidden size, budget and unroll for every core; only the core, task, delay and seed
change. A run's result (its success curve, final success, steps to 0.9 success
and a histogram of its effective gates g after training) is written atomically to
``{out}/results/{run}.json`` when it ends: a finished run is skipped when the sweep runs again,
and an unfinished one (killed or stopped sweep) continues from its last checkpoint (written every
``CHECKPOINT_STEPS`` env steps and at a stop), the very run it would have been uninterrupted.
TensorBoard runs go to
``{out}/tb/{task}-d{delay}/{core}-s{seed}``, so that one ``tensorboard --logdir {out}/tb`` shows
the cores side by side for each task and delay.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rlgate.popgym_suite import SUITE
from rlgate.provenance import provenance, sweep_threads, write_result

#: task name -> the env option that sets its delay (the grid's x axis)
DELAY_OPTIONS = {"PassiveMatch": "delay", "ActiveMatch": "delay", "TMaze": "length"}
PAPER_CORES = ("lstm", "c-lstm", "om-lstm", "u-lstm", "r-lstm", "ur-lstm", "gru", "ur-gru")
GATE_BINS = 50
#: env steps between a run's checkpoints: what a killed sweep loses of each run in flight
CHECKPOINT_STEPS = 250_000


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: every (task, delay) x core x seed. Each task trains its recipe
    (``rlgate.recipes``) with the grid's ``settings`` over it, the same for every core."""

    cores: tuple[str, ...]
    delays: dict[str, tuple[int, ...]]  # task -> delays (easy to hard)
    seeds: tuple[int, ...]
    #: task -> the name of the recipe it trains
    recipes: dict[str, str]
    #: TrainConfig settings over every task's recipe (sections as dicts, merged field by field)
    settings: dict[str, Any] = field(default_factory=dict)
    #: task -> env steps per run (where absent: settings' total_timesteps, else the recipe's)
    budgets: dict[str, int] = field(default_factory=dict)
    #: episodes of a greedy evaluation of each trained run (most likely actions; 0 = none),
    #: recorded as greedy_success beside the training success of the sampled actions
    greedy_episodes: int = 0
    #: episodes of the task's own report on each trained run (``rlgate eval --report``, most
    #: likely actions; 0 = none), recorded as report: its headline and printed lines
    report_episodes: int = 0

    def config(self, task: str, **changes: Any):
        """The TrainConfig of ``task``'s runs before the run's own delay, core and seed."""
        from rlgate.config import TrainConfig
        from rlgate.recipes import RECIPES

        changes = RECIPES[self.recipes[task]].with_changes({**self.settings, **changes})
        if task in self.budgets:
            changes["total_timesteps"] = self.budgets[task]
        return TrainConfig.from_dict(changes)

    def budget(self, task: str) -> int:
        """Env steps of each run of ``task``."""
        return self.config(task).total_timesteps

    def runs(self) -> list[Run]:
        return [
            Run(task, delay, core, seed)
            for task, delays in self.delays.items()
            for delay in delays
            for core in self.cores
            for seed in self.seeds
        ]

    def run(self, run: Run, out: Path) -> dict[str, Any]:
        return run_one(self, run, out)

    @staticmethod
    def headline(record: dict[str, Any]) -> str:
        greedy = record.get("greedy_success")
        return f"success {record['final_success']:.2f}" + (
            f", greedy {greedy:.2f}" if greedy is not None else ""
        )


def _match_agent() -> dict[str, Any]:
    """The Match agent (recipe passive-match's sizes, heads and policy gain) for every task of
    the paper's grid, at the value-loss weight the grid in docs/results/full ran with (0.5; the
    recipe's 2 was found later, on 3M-step runs)."""
    from rlgate.recipes import MATCH_AGENT

    return {**MATCH_AGENT, "ppo": {"vf_coef": 0.5}}


#: the paper's grid ran Active Match with PassiveMatch's agent alone (the recipe
#: active-match-base); the agent that learns it is the recipe active-match (preset active-match)
PAPER_RECIPES = {
    "PassiveMatch": "passive-match",
    "ActiveMatch": "active-match-base",
    "TMaze": "tmaze",
}

PRESETS = {
    # minutes on a 2-core laptop: two cores, the T-maze, two lengths, two seeds
    "small": Grid(
        cores=("lstm", "ur-lstm"),
        delays={"TMaze": (4, 8)},
        seeds=(1, 2),
        recipes={"TMaze": "tmaze"},
        settings={"total_timesteps": 60_000},
    ),
    # the paper's grid: 8 cores x 3 tasks x 3 delays x 3 seeds, with the agent that learns
    # PassiveMatch (on ActiveMatch too: PAPER_RECIPES): 144 Match runs x 1.5M + 72 T-maze runs
    # x 0.25M = 234M env steps, ~2.2 hours of a 2-core Xeon (two 1-thread jobs at ~14-17k
    # steps/s each; ~3.3 on an EPYC VM at ~10k), or a GPU
    "full": Grid(
        cores=PAPER_CORES,
        delays={"PassiveMatch": (5, 15, 30), "ActiveMatch": (5, 15, 30), "TMaze": (4, 8, 16)},
        seeds=(1, 2, 3),
        recipes=PAPER_RECIPES,
        settings=_match_agent(),
        budgets={"PassiveMatch": 1_500_000, "ActiveMatch": 1_500_000, "TMaze": 250_000},
    ),
    # the paper's headline on a 2-core machine in about an hour: lstm vs ur-lstm on
    # PassiveMatch at three delays, three seeds, the same agent as "full"
    "passive": Grid(
        cores=("lstm", "ur-lstm"),
        delays={"PassiveMatch": (5, 15, 30)},
        seeds=(1, 2, 3),
        recipes=PAPER_RECIPES,
        settings=_match_agent(),
        budgets={"PassiveMatch": 1_500_000},
    ),
    # Active Match with the recipe's agent (the seen-so-far loss): the UR-LSTM, the plain LSTM,
    # the GRUs and the memoryless control, 5 seeds, the paper's delay 15 first, then 30 (the
    # longer memory, where the gates should differ most), then 5;
    # each run ends with 600 greedy episodes (the target: greedy success >= 0.9). The recipe's
    # 6M env steps a run, ~15-20 minutes of one core of a 2-core EPYC VM (two 1-thread runs at
    # a time)
    "active-match": Grid(
        cores=("ur-lstm", "lstm", "gru", "ur-gru", "mlp"),
        delays={"ActiveMatch": (15, 30, 5)},
        seeds=(1, 2, 3, 4, 5),
        recipes={"ActiveMatch": "active-match"},
        greedy_episodes=600,
        report_episodes=300,
    ),
    # POPGym's envs (rlgate's tensor clones) x difficulties x the suite's cores x 3 seeds,
    # recipe "popgym" (rlgate.popgym_suite; tables: rlgate.popgym_report)
    "popgym": SUITE,
}


@dataclass(frozen=True)
class Run:
    task: str
    delay: int
    core: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}-d{self.delay}__{self.core}__s{self.seed}"


def train_config(grid: Grid, run: Run, out: Path):
    """The TrainConfig of one run: its task's recipe and the grid's settings, with the run's
    delay, core and seed, on the grid's device (cpu unless set), logging under ``out``, a
    checkpoint every ``CHECKPOINT_STEPS`` env steps."""
    option = DELAY_OPTIONS[run.task]
    base = grid.config(run.task)
    others = [o for o in base.env_option if o.partition("=")[0] != option]
    return grid.config(
        run.task,
        core=run.core,
        env_option=(*others, f"{option}={run.delay}"),
        seed=run.seed,
        device=grid.settings.get("device", "cpu"),
        logdir=str(out / "tb" / f"{run.task}-d{run.delay}"),
        run_name=f"{run.core}-s{run.seed}",
        progress=False,
        checkpoint_interval=max(1, CHECKPOINT_STEPS // base.batch_size),
    )


@torch.no_grad()
def gate_histogram(trainer) -> list[int]:
    """Counts of the effective gate g over GATE_BINS bins of [0, 1], from every step of one
    fresh unroll of the trained agent (the paper's saturation diagnostic); [] for a core without
    gates (the memoryless control)."""
    r, _ = trainer.worker.collect(trainer.update_index)
    steps = [gates["g"] for gates in trainer.model.unroll_gates(r) if "g" in gates]
    if not steps:
        return []
    g = torch.cat([s.flatten().float().cpu() for s in steps])
    return torch.histc(g, bins=GATE_BINS, min=0.0, max=1.0).long().tolist()


def run_one(grid: Grid, run: Run, out: Path) -> dict[str, Any]:
    """Train one run and write its result file; returns the result."""
    from rlgate.train import Trainer

    sweep_threads()
    cfg = train_config(grid, run, out)
    run_dir = _run_folder(cfg)
    if _continues(run_dir, cfg):
        trainer = Trainer(replace(cfg, resume=str(run_dir)))
    else:
        if run_dir.exists():  # left by a killed sweep before its first checkpoint
            shutil.rmtree(run_dir)
        trainer = Trainer(cfg)
    result = trainer.run()
    if result.interrupted:  # stopped by a signal: no result; a resumed sweep runs it again
        raise KeyboardInterrupt
    curve = [
        (int(i * trainer.steps_per_update + trainer.steps_per_update), h["charts/success_rate"])
        for i, h in enumerate(result.history)
        if "charts/success_rate" in h
    ]
    tail = [s for _, s in curve[-max(1, len(curve) // 10) :]]
    record = {
        **asdict(run),
        "steps": result.global_step,
        "final_success": sum(tail) / len(tail) if tail else float("nan"),
        "curve": curve,
        "gate_hist": gate_histogram(trainer),
        "config": cfg.to_dict(),
        "provenance": provenance(),
    }
    if grid.greedy_episodes:
        from rlgate.evaluate import evaluate

        evaluation = evaluate(
            str(run_dir), grid.greedy_episodes, device=cfg.device, seed=10_000 + run.seed,
            greedy=True,
        )  # fmt: skip
        record["greedy_success"] = evaluation["success_rate"]
    if grid.report_episodes:
        record["report"] = task_report(grid, run, run_dir, cfg.device)
    return write_result(out, run.name, record)


def _continues(run_dir: Path, cfg) -> bool:
    """Whether ``run_dir`` holds a checkpoint of this very run (the same config, field for
    field) to continue; a folder of another config, or without a readable checkpoint, is not
    one."""
    from rlgate import checkpoint as ckpt

    if not (run_dir / ckpt.CHECKPOINT).is_file():
        return False
    try:
        saved = ckpt.load(run_dir)["config"]
    except ckpt.CheckpointError:
        return False
    mine = cfg.to_dict()
    return {**saved, "resume": None} == {**mine, "resume": None}


def _run_folder(cfg) -> Path:
    """Where a run's TrainConfig writes its run folder (checkpoint, config, TensorBoard)."""
    return Path(cfg.logdir) / cfg.run_name


def task_report(grid, run: Run, run_dir: Path, device: str) -> dict[str, Any]:
    """The task's own report on a trained run (``rlgate.evaluate.task_report``, greedy,
    ``grid.report_episodes`` episodes, evaluation seed 20,000 + the run's seed): {"headline":
    the few numbers the task puts in a sweep's per-run table, "lines": the report as ``rlgate
    eval --report`` prints it}."""
    from rlgate.evaluate import task_report as report

    out = report(
        str(run_dir), grid.report_episodes, device=device, seed=20_000 + run.seed, greedy=True
    )
    return {"headline": out.get("headline", {}), "lines": out["lines"]}


def add_reports(grid, out: Path) -> tuple[int, list[str]]:
    """Give the finished runs of ``grid`` under ``out`` that have no report (runs that ended
    before the grid asked for one) their report, from the final checkpoint each left under
    ``{out}/tb``. Returns (how many gained one, the names of those whose run folder is gone)."""
    out, added, missing = Path(out), 0, []
    for run in grid.runs():
        path = out / "results" / f"{run.name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        if "report" in record:
            continue
        cfg = train_config(grid, run, out)
        run_dir = _run_folder(cfg)
        if not run_dir.exists():
            missing.append(run.name)
            continue
        record["report"] = task_report(grid, run, run_dir, cfg.device)
        write_result(out, run.name, record)
        added += 1
    return added, missing


def pending(grid, out: Path) -> list:
    """Runs without a result file."""
    return [r for r in grid.runs() if not (out / "results" / f"{r.name}.json").exists()]


def _run(grid, run, out: Path) -> dict[str, Any]:
    return grid.run(run, out)


#: the file a running sweep holds locked inside its output folder
LOCK = ".sweep.lock"


class SweepBusy(RuntimeError):
    """Another sweep is running on the same output folder."""


@contextlib.contextmanager
def _only_sweep(out: Path):
    """Hold ``out``'s sweep lock (an flock, released by the OS whatever ends the process):
    two sweeps on one folder would start over each other's runs in flight. SweepBusy where
    another process holds it; no lock where the platform has no flock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(out / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusy(
                f"another sweep is running on {out} (it holds {out / LOCK}): let it finish, or "
                f"stop it (Ctrl-C: its runs in flight continue from their checkpoints)"
            ) from None
        yield


def run_sweep(grid, out: Path, jobs: int = 1, progress: bool = True) -> int:
    """Run every pending run of ``grid`` (a Grid, or any sweep with ``runs()``, ``run(run,
    out)`` and ``headline(record)``, such as ``rlgate.popgym_suite.Suite``), ``jobs``
    processes at a time; returns how many ran.

    Raises:
        SweepBusy: another sweep is running on ``out`` (nothing is touched).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _only_sweep(out):
        return _run_pending(grid, out, jobs, progress)


def _run_pending(grid, out: Path, jobs: int, progress: bool) -> int:
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(asdict(grid), indent=2))
    todo = pending(grid, out)
    total = len(grid.runs())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=total - len(todo), unit="run", dynamic_ncols=True)
    try:
        if jobs <= 1:
            for run in todo:
                _done(bar, run, grid.headline(grid.run(run, out)))
        else:
            import multiprocessing as mp

            # at most `jobs` runs handed to the pool at a time (it would queue more ahead of its
            # workers), so that after Ctrl-C, which stops the runs in flight at their next update
            # with a checkpoint, or a failed run, no other run starts
            queue, running = iter(todo), {}
            pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
            try:
                for run in itertools.islice(queue, jobs):
                    running[pool.submit(_run, grid, run, out)] = run
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        run = running.pop(future)
                        _done(bar, run, grid.headline(future.result()))
                        for nxt in itertools.islice(queue, 1):
                            running[pool.submit(_run, grid, nxt, out)] = nxt
            finally:
                pool.shutdown(wait=True)
    finally:
        if bar is not None:
            bar.close()
    return len(todo)


def _done(bar, run, headline: str) -> None:
    if bar is not None:
        bar.set_postfix_str(f"{run.name}: {headline}")
        bar.update(1)


def with_settings(grid, **changes: Any):
    """The grid (or suite) with more TrainConfig settings over every recipe (device, ...)."""
    return replace(grid, settings={**grid.settings, **changes})


def with_budget(grid, total_timesteps: int | None, seeds: int | None):
    """The grid (or suite) with another budget (every task's) or number of seeds (1..n)."""
    if total_timesteps is not None:
        grid = with_settings(grid, total_timesteps=total_timesteps)
        if isinstance(grid, Grid):
            grid = replace(grid, budgets={})
    if seeds is not None:
        grid = replace(grid, seeds=tuple(range(1, seeds + 1)))
    return grid
