"""The paper's synthetic memory tasks, learned supervised by any core of ``CORES``: Copy and
Adding (Gu et al. 2020, section 5.1; after Hochreiter & Schmidhuber 1997 and Arjovsky et al.
2016). One run trains one core on one task at one lag (``train``); ``SyntheticGrid`` is the
resumable sweep over cores x lags x seeds (``rlgate.sweep.run_sweep`` drives it, like the RL
sweeps; ``scripts/synthetic.py`` is its command line).

- **Copy** (lag L): 10 symbols drawn uniformly from an alphabet of 8, then L blanks, then 10
  delimiters during which the model must output the 10 symbols in order; cross-entropy on those
  10 outputs. Length L + 20 (the paper's setting: L = 480, length 500). Scored by accuracy per
  symbol and per sequence (all 10 right); chance is 1/8 per symbol.
- **Adding** (length T): two input channels, a value drawn uniformly from [0, 1] and a marker,
  1 at one step of the first half and one of the second, 0 elsewhere; the target is the sum of
  the two marked values, read from the last step's output (MSE). Predicting 1 always scores
  1/6 (the variance of the sum); the paper's setting is T = 2000.

The model is the agents' shape with the RL parts removed: inputs (one-hot tokens, or the two
channels) -> core -> a linear head, trained by Adam with gradient-norm clipping, the same for
every core. A run's result (its loss and score curve, final and best score, the step where it
reached ``SOLVED``, and a histogram of its effective gates g over an evaluation batch) is written
atomically to ``{out}/results/{run}.json`` when it ends.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.cores import CORES, make_core

SYMBOLS, SEQUENCE = 8, 10  # Copy's alphabet and how many symbols it copies
BLANK, DELIMITER = SYMBOLS, SYMBOLS + 1  # Copy's other two tokens
TASKS = ("copy", "adding")
#: what solves a task: Copy's accuracy per symbol at least 0.99, Adding's MSE at most 0.01
#: (a sixteenth of the 1/6 of always predicting 1)
SOLVED = {"copy": 0.99, "adding": 0.01}
GATE_BINS = 50


def copy_batch(batch: int, lag: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Copy sequences: tokens [L + 20, B] long (0..7 symbols, 8 blank, 9 delimiter) and the
    targets [10, B] (the symbols, to be output over the last 10 steps)."""
    symbols = torch.randint(0, SYMBOLS, (SEQUENCE, batch), generator=generator)
    blanks = torch.full((lag, batch), BLANK, dtype=torch.long)
    marks = torch.full((SEQUENCE, batch), DELIMITER, dtype=torch.long)
    return torch.cat([symbols, blanks, marks]), symbols


def adding_batch(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Adding sequences: inputs [T, B, 2] (value, marker) and targets [B] (the sum of the two
    marked values; one marker in each half)."""
    if length < 2:
        raise ValueError(f"the adding task needs length >= 2, got {length}")
    values = torch.rand(length, batch, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, length, (batch,), generator=generator)
    marker = torch.zeros(length, batch)
    cols = torch.arange(batch)
    marker[first, cols] = 1.0
    marker[second, cols] = 1.0
    target = values[first, cols] + values[second, cols]
    return torch.stack([values, marker], dim=-1), target


@dataclass(frozen=True)
class SyntheticConfig:
    """One supervised run: ``task`` ("copy" or "adding") at ``lag`` (Copy's blanks, Adding's
    length) for ``core``, with the optimiser and sizes the same for every core."""

    task: str = "copy"
    lag: int = 50
    core: str = "ur-lstm"
    hidden_size: int = 64
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    steps: int = 2000
    seed: int = 1
    backend: str = "auto"
    eval_every: int = 50
    eval_batch: int = 256

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        if self.core not in CORES:
            raise ValueError(f"unknown core {self.core!r}; valid cores: {', '.join(CORES)}")
        for name in ("lag", "hidden_size", "batch_size", "steps", "eval_every", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "lag" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.task == "adding" and self.lag < 2:
            raise ValueError(f"the adding task needs lag (its length) >= 2, got {self.lag}")
        for name in ("learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def length(self) -> int:
        """Steps of one sequence."""
        return self.lag + 2 * SEQUENCE if self.task == "copy" else self.lag


class SyntheticModel(nn.Module):
    """Inputs -> core -> linear head: Copy's tokens enter one-hot and every step gets 8 logits;
    Adding's two channels enter as they are and the last step gets the prediction."""

    def __init__(self, cfg: SyntheticConfig):
        super().__init__()
        self.task = cfg.task
        inputs = DELIMITER + 1 if cfg.task == "copy" else 2
        options: dict[str, Any] = {"backend": cfg.backend}
        if CORES[cfg.core].init == "chrono":
            options["chrono_t_max"] = float(max(cfg.length, 3))
        self.core = make_core(cfg.core, inputs, cfg.hidden_size, **options)
        self.head = nn.Linear(cfg.hidden_size, SYMBOLS if cfg.task == "copy" else 1)

    def features(self, x: Tensor) -> Tensor:
        return F.one_hot(x, DELIMITER + 1).float() if self.task == "copy" else x

    def forward(self, x: Tensor) -> Tensor:
        """Copy: tokens [T, B] -> logits [10, B, 8] of the last 10 steps; Adding: [T, B, 2] ->
        predictions [B]."""
        feats = self.features(x)
        state = self.core.initial_state(feats.shape[1], feats.device)
        y, _ = self.core(feats, state)
        if self.task == "copy":
            return self.head(y[-SEQUENCE:])
        return self.head(y[-1]).squeeze(-1)

    @torch.no_grad()
    def gate_histogram(self, x: Tensor) -> list[int]:
        """Counts of the effective gate g over GATE_BINS bins of [0, 1], at every step of the
        sequences x (empty for the memoryless core)."""
        feats = self.features(x)
        state = self.core.initial_state(feats.shape[1], feats.device)
        counts = torch.zeros(GATE_BINS, dtype=torch.long)
        for x_t in feats.unbind(0):
            g = self.core.gates(x_t, state).get("g")
            if g is None:
                return []
            counts += torch.histc(g.float(), bins=GATE_BINS, min=0.0, max=1.0).long()
            _, state = self.core.step(x_t, state)
        return counts.tolist()


def _batch(cfg: SyntheticConfig, batch: int, generator: torch.Generator):
    if cfg.task == "copy":
        return copy_batch(batch, cfg.lag, generator)
    return adding_batch(batch, cfg.lag, generator)


def loss_and_score(cfg: SyntheticConfig, out: Tensor, target: Tensor) -> tuple[Tensor, dict]:
    """The training loss, and the scores: Copy's accuracy per symbol and per sequence, Adding's
    MSE."""
    if cfg.task == "copy":
        loss = F.cross_entropy(out.reshape(-1, SYMBOLS), target.reshape(-1))
        right = out.argmax(-1) == target  # [10, B]
        return loss, {
            "symbol_accuracy": float(right.float().mean()),
            "sequence_accuracy": float(right.all(0).float().mean()),
        }
    loss = F.mse_loss(out, target)
    return loss, {"mse": float(loss.detach())}


def score_name(task: str) -> str:
    """The score a task is judged by (higher is better for Copy, lower for Adding)."""
    return "symbol_accuracy" if task == "copy" else "mse"


def solved(task: str, score: float) -> bool:
    return score >= SOLVED[task] if task == "copy" else score <= SOLVED[task]


def train(cfg: SyntheticConfig, progress=None) -> dict[str, Any]:
    """Train one run. ``progress(step)`` is called after each step where given. Returns the
    curve [(step, train loss, eval scores)], the final and best score, the first step that
    reached SOLVED (None: never) and the gate histogram after training."""
    torch.manual_seed(cfg.seed)
    model = SyntheticModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    data = torch.Generator().manual_seed(cfg.seed)
    eval_x, eval_y = _batch(cfg, cfg.eval_batch, torch.Generator().manual_seed(10_000 + cfg.seed))
    name = score_name(cfg.task)
    curve, first_solved, losses = [], None, []
    for step in range(1, cfg.steps + 1):
        x, y = _batch(cfg, cfg.batch_size, data)
        loss, _ = loss_and_score(cfg, model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                _, scores = loss_and_score(cfg, model(eval_x), eval_y)
            curve.append((step, sum(losses) / len(losses), scores))
            losses = []
            if first_solved is None and solved(cfg.task, scores[name]):
                first_solved = step
        if progress is not None:
            progress(step)
    values = [s[name] for _, _, s in curve]
    best = max(values) if cfg.task == "copy" else min(values)
    return {
        "curve": curve,
        "final": curve[-1][2],
        "best": best,
        "steps_to_solve": first_solved,
        "gate_hist": model.gate_histogram(eval_x[:, :32]),
    }


@dataclass(frozen=True)
class SyntheticRun:
    task: str
    lag: int
    core: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}-L{self.lag}__{self.core}__s{self.seed}"


@dataclass(frozen=True)
class SyntheticGrid:
    """Every (task, lag) x core x seed, with ``settings`` (SyntheticConfig fields) the same for
    every run; ``steps`` gives each task's number of training steps."""

    cores: tuple[str, ...]
    lags: dict[str, tuple[int, ...]]
    seeds: tuple[int, ...]
    steps: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[SyntheticRun]:
        return [
            SyntheticRun(task, lag, core, seed)
            for task, lags in self.lags.items()
            for lag in lags
            for core in self.cores
            for seed in self.seeds
        ]

    def config(self, run: SyntheticRun) -> SyntheticConfig:
        return SyntheticConfig(**{**self.settings, "task": run.task, "lag": run.lag,
                                  "core": run.core, "seed": run.seed,
                                  "steps": self.steps[run.task]})  # fmt: skip

    def run(self, run: SyntheticRun, out: Path) -> dict[str, Any]:
        """Train one run and write its result file; returns the result."""
        from rlgate.provenance import provenance, sweep_threads, write_result

        sweep_threads()
        cfg = self.config(run)
        record = {**asdict(run), **train(cfg), "config": asdict(cfg), "provenance": provenance()}
        return write_result(out, run.name, record)

    @staticmethod
    def headline(record: dict[str, Any]) -> str:
        return f"{score_name(record['task'])} {record['final'][score_name(record['task'])]:.3f}"


#: the paper's cores and ablations, and the memoryless control
SYNTHETIC_CORES = (
    "mlp", "lstm", "c-lstm", "u-lstm", "r-lstm", "ur-lstm", "o-lstm", "or-lstm", "om-lstm",
    "gru", "ur-gru",
)  # fmt: skip

# the paper's claim with the lag as the x axis: every core, copy lags 50-500, adding
# lengths 100-2000, 3 seeds, the same sizes and optimiser for every core. Sized to about
# four hours on two cores (hidden 64, batch 32: ~0.2 ms per sequence step and core, so one
# training step of every run at every lag costs ~6 s of copy and ~24 s of adding); lr
# 3e-3, where a pilot at 1e-3 solved no adding run within 1,000 steps and at 3e-3 the
# UR-LSTM solved lengths 100 and 500 within 600-800.
_FULL = SyntheticGrid(
    cores=SYNTHETIC_CORES,
    lags={"copy": (50, 100, 200, 500), "adding": (100, 500, 1000, 2000)},
    seeds=(1, 2, 3),
    steps={"copy": 1500, "adding": 800},
    settings={"learning_rate": 3e-3},
)

#: the sweep (scripts/synthetic.py --preset NAME)
PRESETS = {
    # a couple of minutes: the plain and the UR-LSTM on a short copy and a short sum
    "small": SyntheticGrid(
        cores=("lstm", "ur-lstm"),
        lags={"copy": (20,), "adding": (50,)},
        seeds=(1,),
        steps={"copy": 300, "adding": 300},
    ),
    "full": _FULL,
    # what a longer budget changes at the longest copy lag: the full sweep's settings, 8,000
    # steps instead of 1,500 (about 12 minutes a run on one core), for the plain LSTM, the
    # chrono LSTM and the two gate variants the paper ranks first
    "copy-long": replace(
        _FULL,
        cores=("lstm", "c-lstm", "ur-lstm", "or-lstm"),
        lags={"copy": (500,)},
        seeds=(1,),
        steps={"copy": 8000},
    ),
}


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, lag, core): final and best score mean ± std over seeds, how many
    seeds reached SOLVED and their mean steps to it."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["lag"], r["core"]), []).append(r)
    order = {c: i for i, c in enumerate(SYNTHETIC_CORES)}
    rows = []
    for (task, lag, core), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99), kv[0][2])
    ):
        name = score_name(task)
        final = [r["final"][name] for r in rs]
        best = [r["best"] for r in rs]
        reached = [r["steps_to_solve"] for r in rs if r["steps_to_solve"] is not None]

        def ms(v):
            return statistics.fmean(v), statistics.pstdev(v) if len(v) > 1 else 0.0

        rows.append({
            "task": task, "lag": lag, "core": core, "seeds": len(rs), "score": name,
            "final": ms(final), "best": ms(best), "solved": len(reached),
            "steps_to_solve": statistics.fmean(reached) if reached else None,
        })  # fmt: skip
    return rows


def write_report(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """results.md (the table), accuracy_vs_lag.png (every core's final score against the lag,
    per task), curves_{task}-L{lag}.png (score over training with seed bands, at each task's
    longest lag) and gates.png (the effective-gate histograms after training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    rows = summarize(records)
    lines = [
        f"Synthetic tasks: {len(records)} runs. Copy: accuracy per symbol (chance 0.125, solved "
        f">= {SOLVED['copy']}); Adding: MSE (predicting 1 scores 0.167, solved <= "
        f"{SOLVED['adding']}). Mean ± std over seeds.",
        "",
        "| task | lag | core | seeds | final | best | solved | steps to solve |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        steps = "-" if r["steps_to_solve"] is None else f"{r['steps_to_solve']:,.0f}"
        lines.append(
            f"| {r['task']} | {r['lag']} | {r['core']} | {r['seeds']} | "
            f"{r['final'][0]:.3f} ± {r['final'][1]:.3f} | {r['best'][0]:.3f} ± {r['best'][1]:.3f}"
            f" | {r['solved']}/{r['seeds']} | {steps} |"
        )
    md = out / "results.md"
    md.write_text("\n".join(lines) + "\n")
    paths = [md]
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for core in dict.fromkeys(r["core"] for r in rows if r["task"] == task):
            pts = [(r["lag"], r["final"][0], r["final"][1]) for r in rows
                   if r["task"] == task and r["core"] == core]  # fmt: skip
            lag, mean, std = map(np.array, zip(*pts))
            ax.errorbar(lag, mean, yerr=std, marker="o", capsize=3, label=core)
        ax.set_xscale("log")
        ax.set_xlabel("lag (copy: blanks; adding: length)")
        ax.set_ylabel(score_name(task))
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_lag.png", dpi=120)
    plt.close(fig)
    paths.append(out / "accuracy_vs_lag.png")
    for task in tasks:
        lag = max(r["lag"] for r in rows if r["task"] == task)
        fig, ax = plt.subplots(figsize=(6, 4))
        name = score_name(task)
        for core in dict.fromkeys(r["core"] for r in records if r["task"] == task):
            rs = [r for r in records if r["task"] == task and r["lag"] == lag and r["core"] == core]
            if not rs:
                continue
            steps = np.array([s for s, _, _ in rs[0]["curve"]])
            vals = np.array([[sc[name] for _, _, sc in r["curve"]] for r in rs])
            ax.plot(steps, vals.mean(0), label=core)
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.15)
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.set_title(f"{task}, lag {lag} (band: seeds' range)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"curves_{task}-L{lag}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    hists = [r for r in records if r.get("gate_hist")]
    if hists:
        fig, ax = plt.subplots(figsize=(6, 4))
        edges = np.linspace(0, 1, GATE_BINS + 1)
        for core in dict.fromkeys(r["core"] for r in hists):
            counts = np.sum([r["gate_hist"] for r in hists if r["core"] == core], axis=0)
            ax.stairs(counts / counts.sum(), edges, label=core)
        ax.set_xlabel("effective gate g after training")
        ax.set_ylabel("share of (unit, step)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gates.png", dpi=120)
        plt.close(fig)
        paths.append(out / "gates.png")
    return paths
