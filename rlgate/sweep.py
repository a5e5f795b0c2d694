"""The paper's comparison as a resumable sweep: cores x tasks x delays x seeds, then tables and
figures (driven by scripts/reproduce.py).

Every run trains the same agent (PPO), hidden size, budget and unroll; only the core, task,
delay and seed change. A run's result (its success curve, final success, steps to 0.9 success
and a histogram of its effective gates g after training) is written atomically to
``{out}/results/{run}.json`` when it ends: a finished run is skipped when the sweep runs again,
and an unfinished one (killed sweep) starts over. TensorBoard runs go to
``{out}/tb/{task}-d{delay}/{core}-s{seed}``, so that one ``tensorboard --logdir {out}/tb`` shows
the cores side by side for each task and delay.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlgate.checkpoint import write_atomic

#: task name -> (env id, the env option that sets the delay)
TASKS = {
    "PassiveMatch": ("rlgate/PassiveMatch-v0", "delay"),
    "ActiveMatch": ("rlgate/ActiveMatch-v0", "delay"),
    "TMaze": ("rlgate/TMaze-v0", "length"),
}
#: the Match tasks pay 10 per match plus apples (returns near 20): learning from rewards x 0.1
#: keeps the value loss from drowning the policy gradient (#4's notes)
MATCH_REWARD_SCALES = {"PassiveMatch": 0.1, "ActiveMatch": 0.1}
#: entropy bonus 0.03 on the Match tasks: with 0.01 the choice phase's policy turns
#: deterministic once it has learned one square position (success 2/3) and stops trying the
#: other two (#4's notes; 0.05, the paper's, tried with 256-step unrolls, did no better)
MATCH_ENT_COEFS = {"PassiveMatch": 0.03, "ActiveMatch": 0.03}
PAPER_CORES = ("lstm", "c-lstm", "om-lstm", "u-lstm", "r-lstm", "ur-lstm", "gru", "ur-gru")
SUCCESS_TARGET = 0.9
GATE_BINS = 50


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: every (task, delay) x core x seed, with one shared agent config."""

    cores: tuple[str, ...]
    delays: dict[str, tuple[int, ...]]  # task -> delays (easy to hard)
    seeds: tuple[int, ...]
    total_timesteps: int
    num_envs: int = 32
    unroll_length: int = 64
    hidden_size: int = 64
    head_size: int = 0
    #: gated-attention heads and the policy's init gain (TrainConfig's view_gate and
    #: policy_init_gain): the same for every core
    view_gate: bool = False
    policy_init_gain: float = 0.01
    device: str = "cpu"
    #: task -> reward scale (1 where absent); the same for every core of that task
    reward_scales: dict[str, float] = field(default_factory=dict)
    #: task -> PPO entropy coefficient (PPOConfig's default where absent); likewise
    ent_coefs: dict[str, float] = field(default_factory=dict)
    #: task -> env steps per run (total_timesteps where absent); the same for every core
    task_timesteps: dict[str, int] = field(default_factory=dict)

    def budget(self, task: str) -> int:
        """Env steps of each run of ``task``."""
        return self.task_timesteps.get(task, self.total_timesteps)

    def runs(self) -> list[Run]:
        return [
            Run(task, delay, core, seed)
            for task, delays in self.delays.items()
            for delay in delays
            for core in self.cores
            for seed in self.seeds
        ]


#: the agent that learns the Match tasks: MLP heads over [core output, view gated by it]
#: (gated attention) and a policy initialised at gain 1, unrolls spanning an episode, 32 envs,
#: rewards x 0.1, entropy 0.03. On PassiveMatch delay 30 (ur-lstm, 8M steps, 5 seeds, greedy)
#: heads over [core, features] without the gate and gain reached 0.72-0.88; with the gate
#: beside the features, 0.885-0.938, always one (colour, position) case short; with the view
#: read only through the gate, 0.78-1.00 (mean 0.91), three of five seeds at 0.93 or more
#: (docs/results.md, #4's notes). Told the answer, only gated heads at gain 1 learn the
#: choice within 400 steps (scripts/probe_choice.py). 16 envs x 256-step unrolls, which cut
#: fewer episodes between cue and choice, did no better and ran ~1.4x slower.
#: scripts/bench_train.py's PassiveMatch recipe adds a value-loss weight of 2,
#: which brought 3M-step runs off chance on 4 seeds of 4 (0.5: 3 of 4); the full grid in
#: docs/results/full ran without it, and so do these presets, which reproduce that grid.
MATCH_AGENT = {
    "num_envs": 32,
    "unroll_length": 128,
    "head_size": 64,
    "view_gate": True,
    "policy_init_gain": 1.0,
    "reward_scales": MATCH_REWARD_SCALES,
    "ent_coefs": MATCH_ENT_COEFS,
}

PRESETS = {
    # minutes on a 2-core laptop: two cores, the T-maze, two lengths, two seeds
    "small": Grid(
        cores=("lstm", "ur-lstm"),
        delays={"TMaze": (4, 8)},
        seeds=(1, 2),
        total_timesteps=60_000,
        unroll_length=32,
    ),
    # the paper's grid: 8 cores x 3 tasks x 3 delays x 3 seeds, with the agent that learns the
    # Match tasks (MATCH_AGENT): 144 Match runs x 1.5M + 72 T-maze runs x 0.25M = 234M env
    # steps, ~2.2 hours of a 2-core Xeon (two 1-thread jobs at ~14-17k steps/s each; ~3.3 on
    # the EPYC VM at ~10k), or a GPU
    "full": Grid(
        cores=PAPER_CORES,
        delays={"PassiveMatch": (5, 15, 30), "ActiveMatch": (5, 15, 30), "TMaze": (4, 8, 16)},
        seeds=(1, 2, 3),
        total_timesteps=1_500_000,
        task_timesteps={"TMaze": 250_000},
        **MATCH_AGENT,
    ),
    # the paper's headline on this 2-core machine in about an hour: lstm vs ur-lstm on
    # PassiveMatch at three delays, three seeds, the same agent as "full"
    "passive": Grid(
        cores=("lstm", "ur-lstm"),
        delays={"PassiveMatch": (5, 15, 30)},
        seeds=(1, 2, 3),
        total_timesteps=1_500_000,
        **MATCH_AGENT,
    ),
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
    from rlgate.config import PPOConfig, TrainConfig

    env_id, option = TASKS[run.task]
    return TrainConfig(
        agent="ppo",
        core=run.core,
        env=env_id,
        env_option=(f"{option}={run.delay}",),
        num_envs=grid.num_envs,
        unroll_length=grid.unroll_length,
        hidden_size=grid.hidden_size,
        encoder_size=grid.hidden_size,
        head_size=grid.head_size,
        view_gate=grid.view_gate,
        policy_init_gain=grid.policy_init_gain,
        reward_scale=grid.reward_scales.get(run.task, 1.0),
        ppo=PPOConfig(ent_coef=grid.ent_coefs.get(run.task, PPOConfig.ent_coef)),
        total_timesteps=grid.budget(run.task),
        seed=run.seed,
        device=grid.device,
        logdir=str(out / "tb" / f"{run.task}-d{run.delay}"),
        run_name=f"{run.core}-s{run.seed}",
        progress=False,
        checkpoint_interval=10**9,
    )


@torch.no_grad()
def gate_histogram(trainer) -> list[int]:
    """Counts of the effective gate g over GATE_BINS bins of [0, 1], from every step of one
    fresh unroll of the trained agent (the paper's saturation diagnostic)."""
    r, _ = trainer.worker.collect(trainer.update_index)
    g = torch.cat([gates["g"].flatten().float().cpu() for gates in trainer.model.unroll_gates(r)])
    return torch.histc(g, bins=GATE_BINS, min=0.0, max=1.0).long().tolist()


def steps_to(curve: list[tuple[int, float]], target: float, window: int = 10) -> int | None:
    """First env step at which the success rate, averaged over the last ``window`` points of
    the curve (updates), reached ``target`` (None: never). The average keeps one lucky early
    episode from counting."""
    for i in range(window - 1, len(curve)):
        recent = [s for _, s in curve[i - window + 1 : i + 1]]
        if sum(recent) / window >= target:
            return curve[i][0]
    return None


def run_one(grid: Grid, run: Run, out: Path) -> dict[str, Any]:
    """Train one run and write its result file; returns the result."""
    from rlgate.train import Trainer

    torch.set_num_threads(max(1, int(os.environ.get("RLGATE_SWEEP_THREADS", "1"))))
    cfg = train_config(grid, run, out)
    run_dir = Path(cfg.logdir) / cfg.run_name
    if run_dir.exists():  # left by a killed sweep: start it over
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
    path = out / "results" / f"{run.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record).encode()
    write_atomic(path, lambda f: f.write(text))
    return record


#: the folders whose uncommitted changes make a run's provenance "dirty"
CODE_DIRS = ("rlgate", "agents", "envs")


def provenance() -> dict[str, Any]:
    """Where a run's result came from: the checkout's git commit (None outside a git checkout)
    and whether the code that trains (rlgate/, agents/, envs/) had uncommitted changes, torch's
    version and the run's thread count. A sweep resumed over several checkouts can then say
    which commit produced which runs."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = (
        git("status", "--porcelain", "--untracked-files=no", "--", *CODE_DIRS) if commit else None
    )
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def pending(grid: Grid, out: Path) -> list[Run]:
    """Runs without a result file."""
    return [r for r in grid.runs() if not (out / "results" / f"{r.name}.json").exists()]


def run_sweep(grid: Grid, out: Path, jobs: int = 1, progress: bool = True) -> int:
    """Run every pending run, ``jobs`` processes at a time; returns how many ran."""
    out = Path(out)
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
                _done(bar, run, run_one(grid, run, out))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(run_one, grid, run, out): run for run in todo}
                for future in as_completed(futures):
                    _done(bar, futures[future], future.result())
    finally:
        if bar is not None:
            bar.close()
    return len(todo)


def _done(bar, run: Run, record: dict) -> None:
    if bar is not None:
        bar.set_postfix_str(f"{run.name}: success {record['final_success']:.2f}")
        bar.update(1)


def load_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(out, "results").glob("*.json"))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _core_key(core: str) -> tuple[int, str]:
    """Sort cores in the paper's order, others after them by name."""
    order = PAPER_CORES.index(core) if core in PAPER_CORES else len(PAPER_CORES)
    return order, core


def curve_mean(curve: list[tuple[int, float]]) -> float:
    """The success rate averaged over a run's whole training, weighting each update by the env
    steps it covers: the area under the success curve over the budget. 1.0 means solved from the
    start, and of two runs that end equally, the one that learned sooner scores higher (the
    paper's "learns faster"), even where neither reaches SUCCESS_TARGET."""
    if not curve:
        return float("nan")
    steps = [s for s, _ in curve]
    widths = [steps[0]] + [b - a for a, b in itertools.pairwise(steps)]
    return sum(w * v for w, (_, v) in zip(widths, curve)) / steps[-1]


def describe(grid: Grid, records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines that say what a results table comes from: how many of the grid's runs have
    finished, the budget and agent (the same for every core), and the commits that ran them."""
    names = {r.name for r in grid.runs()}
    done = [r for r in records if Run(r["task"], r["delay"], r["core"], r["seed"]).name in names]
    budgets = ", ".join(f"{task} {grid.budget(task):,}" for task in grid.delays)
    agent = (
        f"PPO, {grid.num_envs} envs x {grid.unroll_length}-step unrolls, hidden "
        f"{grid.hidden_size}, heads {grid.head_size or 'linear'}, view gate "
        f"{'on' if grid.view_gate else 'off'}, policy init gain {grid.policy_init_gain:g}, "
        f"reward scales {grid.reward_scales or 1}, entropy {grid.ent_coefs or 'default'}"
    )
    commits = Counter(
        (prov.get("commit") or "unknown")[:10] + (" (dirty)" if prov.get("dirty") else "")
        for prov in (r.get("provenance") or {} for r in done)
    )
    by_commit = ", ".join(f"`{c}` {n}" for c, n in commits.most_common())
    return [
        f"- runs finished: {len(done)} of {len(names)} ({len(grid.cores)} cores x "
        f"{sum(len(d) for d in grid.delays.values())} task-delays x {len(grid.seeds)} seeds)",
        f"- env steps per run: {budgets}",
        f"- agent, the same for every core: {agent}",
        f"- runs per commit: {by_commit or '-'}",
    ]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, delay, core): final success and success over training
    (``curve_mean``), mean and std over seeds, and steps to SUCCESS_TARGET (mean over the seeds
    that reached it, and how many did)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["delay"], r["core"]), []).append(r)
    rows = []
    for (task, delay, core), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], *_core_key(kv[0][2]))
    ):
        mean, std = _mean_std([r["final_success"] for r in rs])
        auc_mean, auc_std = _mean_std([curve_mean(r["curve"]) for r in rs if r.get("curve")])
        reached = [steps_to(r["curve"], SUCCESS_TARGET) for r in rs if "curve" in r]
        reached = [s for s in reached if s is not None]
        rows.append(
            {
                "task": task,
                "delay": delay,
                "core": core,
                "seeds": len(rs),
                "env_steps": max((r.get("steps", 0) for r in rs), default=0),
                "final_success_mean": round(mean, 4),
                "final_success_std": round(std, 4),
                "mean_success_mean": round(auc_mean, 4),
                "mean_success_std": round(auc_std, 4),
                "steps_to_0.9_mean": round(statistics.fmean(reached)) if reached else None,
                "seeds_reaching_0.9": len(reached),
            }
        )
    return rows


def write_tables(
    rows: list[dict[str, Any]], out: Path, preamble: list[str] = ()
) -> tuple[Path, Path]:
    """results.csv and results.md under ``out`` (``preamble``: lines put above the table)."""
    out = Path(out)
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        *preamble,
        *([""] if preamble else []),
        "| task | delay | core | env steps | final success (mean ± std) "
        "| success over training (mean ± std) | steps to 0.9 (mean) | seeds at 0.9 |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        steps = r["steps_to_0.9_mean"]
        lines.append(
            f"| {r['task']} | {r['delay']} | {r['core']} | {r['env_steps']:,} | "
            f"{r['final_success_mean']:.3f} ± "
            f"{r['final_success_std']:.3f} | {r['mean_success_mean']:.3f} ± "
            f"{r['mean_success_std']:.3f} | {'-' if steps is None else f'{steps:,}'} | "
            f"{r['seeds_reaching_0.9']}/{r['seeds']} |"
        )
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _curve_band(records: list[dict], points: int = 50):
    """Success curves of some seeds on a common step grid, each smoothed by a trailing 5-update
    average (per-update success rates are noisy): (steps, mean, std) arrays."""
    end = min(r["curve"][-1][0] for r in records)
    xs = np.linspace(end / points, end, points)
    ys = []
    for r in records:
        steps, vals = np.asarray(r["curve"], dtype=float).T
        cumsum = np.concatenate([[0.0], np.cumsum(vals)])
        idx = np.arange(1, len(vals) + 1)
        smooth = (cumsum[idx] - cumsum[np.maximum(0, idx - 5)]) / np.minimum(idx, 5)
        ys.append(np.interp(xs, steps, smooth))
    ys = np.stack(ys)
    return xs, ys.mean(0), ys.std(0)


def write_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """PNG figures under ``out``: curves_{task}.png (success vs env steps per core, seed bands,
    one panel per delay), success_vs_delay.png (final success and success over training, per
    core) and gates.png (g histograms, lstm vs ur-lstm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    paths = []
    cores = sorted({r["core"] for r in records}, key=_core_key)
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(cores)}
    tasks = sorted({r["task"] for r in records})
    for task in tasks:
        delays = sorted({r["delay"] for r in records if r["task"] == task})
        fig, axes = plt.subplots(1, len(delays), figsize=(4.5 * len(delays), 3.6), squeeze=False)
        for ax, delay in zip(axes[0], delays):
            for core in cores:
                rs = [
                    r
                    for r in records
                    if (r["task"], r["delay"], r["core"]) == (task, delay, core) and r["curve"]
                ]
                if not rs:
                    continue
                xs, mean, std = _curve_band(rs)
                ax.plot(xs, mean, label=core, color=colours[core])
                ax.fill_between(xs, mean - std, mean + std, color=colours[core], alpha=0.15)
            what = TASKS[task][1] if task in TASKS else "delay"
            ax.set_title(f"{task}, {what} {delay} (5-update average)")
            ax.set_xlabel("env steps")
            ax.set_ylim(-0.02, 1.02)
        axes[0][0].set_ylabel("success rate")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / f"curves_{task}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    rows = summarize(records)
    # top: final success; bottom: success over training (how soon it was learned)
    measures = (("final_success", "final success rate"), ("mean_success", "success over training"))
    fig, axes = plt.subplots(
        len(measures), len(tasks), figsize=(4.5 * len(tasks), 3.4 * len(measures)), squeeze=False
    )
    for (key, label), ax_row in zip(measures, axes):
        for ax, task in zip(ax_row, tasks):
            for core in cores:
                rs = [r for r in rows if r["task"] == task and r["core"] == core]
                if rs:
                    ax.errorbar(
                        [r["delay"] for r in rs],
                        [r[f"{key}_mean"] for r in rs],
                        yerr=[r[f"{key}_std"] for r in rs],
                        label=core,
                        color=colours[core],
                        marker="o",
                        capsize=3,
                    )
            ax.set_title(task)
            ax.set_xlabel("delay (Match) / corridor length (TMaze)")
            ax.set_ylim(-0.02, 1.02)
        ax_row[0].set_ylabel(label)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "success_vs_delay.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    shown = [c for c in ("lstm", "ur-lstm") if c in cores] or cores[:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.4), squeeze=False)
    edges = [i / GATE_BINS for i in range(GATE_BINS + 1)]
    for ax, core in zip(axes[0], shown):
        counts = [0] * GATE_BINS
        for r in records:
            if r["core"] == core:
                counts = [a + b for a, b in zip(counts, r["gate_hist"])]
        total = max(1, sum(counts))
        ax.bar(edges[:-1], [c / total for c in counts], width=1 / GATE_BINS, align="edge")
        ax.set_title(f"{core}: effective gate g after training")
        ax.set_xlabel("g")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("fraction of units x steps")
    fig.tight_layout()
    paths.append(out / "gates.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def saturation(records: list[dict[str, Any]], core: str, eps_bins: int = 1) -> float:
    """Share of g values in the outermost ``eps_bins`` bins at each end (g < 0.02 or > 0.98)."""
    counts = [0] * GATE_BINS
    for r in records:
        if r["core"] == core:
            counts = [a + b for a, b in zip(counts, r["gate_hist"])]
    total = sum(counts)
    if not total:
        return math.nan
    return (sum(counts[:eps_bins]) + sum(counts[-eps_bins:])) / total


def with_budget(grid: Grid, total_timesteps: int | None, seeds: int | None) -> Grid:
    """The grid with another budget (every task's) or number of seeds (1..n)."""
    if total_timesteps is not None:
        grid = replace(grid, total_timesteps=total_timesteps, task_timesteps={})
    if seeds is not None:
        grid = replace(grid, seeds=tuple(range(1, seeds + 1)))
    return grid
