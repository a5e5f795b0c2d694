"""Tables, statistics and figures of a sweep's results (rlgate.sweep runs the sweep).

A result is the JSON record ``rlgate.sweep.run_one`` writes per run: its task, delay, core,
seed, success curve [(env step, success rate)], final success, gate histogram, config and
provenance.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rlgate.sweep import DELAY_OPTIONS, GATE_BINS, PAPER_CORES, Grid, Run

SUCCESS_TARGET = 0.9


def steps_to(curve: list[tuple[int, float]], target: float, window: int = 10) -> int | None:
    """First env step at which the success rate, averaged over the last ``window`` points of
    the curve (updates), reached ``target`` (None: never). The average keeps one lucky early
    episode from counting."""
    for i in range(window - 1, len(curve)):
        recent = [s for _, s in curve[i - window + 1 : i + 1]]
        if sum(recent) / window >= target:
            return curve[i][0]
    return None


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
    from rlgate.recipes import flags

    budgets = ", ".join(f"{task} {grid.budget(task):,}" for task in grid.delays)
    recipes = ", ".join(f"{task} `{grid.recipes[task]}`" for task in grid.delays)
    over = flags({k: v for k, v in grid.settings.items() if k != "total_timesteps"})
    agent = f"each task's recipe ({recipes}; `rlgate recipes NAME`)" + (
        f" with `{' '.join(over)}`" if over else ""
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
        greedy = [r["greedy_success"] for r in rs if "greedy_success" in r]
        if greedy:
            g_mean, g_std = _mean_std(greedy)
            rows[-1].update(
                greedy_success_mean=round(g_mean, 4),
                greedy_success_std=round(g_std, 4),
                greedy_seeds_at_0_9=sum(g >= SUCCESS_TARGET for g in greedy),
                greedy_seeds=len(greedy),
            )
    return rows


def run_table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of a per-run table of the runs with a task report (``rlgate.sweep``'s
    ``report_episodes``): task, delay, core, seed, final and greedy success, then the
    report's headline (the task's own numbers, such as the Match tasks' memory probe); []
    where no run has one."""
    reported = [r for r in records if "report" in r]
    if not reported:
        return []
    keys = list(dict.fromkeys(k for r in reported for k in r["report"]["headline"]))
    reported.sort(key=lambda r: (r["task"], r["delay"], _core_key(r["core"]), r["seed"]))

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [
        "Per run (the task's report: greedy, on fresh episodes):",
        "",
        "| task | delay | core | seed | final success | greedy success | "
        + " | ".join(keys)
        + " |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * len(keys),
    ]
    for r in reported:
        head = r["report"]["headline"]
        greedy = r.get("greedy_success")
        lines.append(
            f"| {r['task']} | {r['delay']} | {r['core']} | {r['seed']} | "
            f"{r['final_success']:.3f} | {'-' if greedy is None else f'{greedy:.3f}'} | "
            + " | ".join(cell(head[k]) if k in head else "-" for k in keys)
            + " |"
        )
    return lines


#: up to this many values in all, ``permutation_p`` takes every split of them; above, this many
#: random ones
EXACT_SPLITS_MAX_VALUES, RANDOM_SPLITS = 20, 100_000


def permutation_p(a: list[float], b: list[float]) -> float:
    """Two-sided permutation test of mean(a) - mean(b): the share of the ways to split the
    pooled values into groups of len(a) and len(b) whose difference of means is at least as
    far from 0 as the observed one (every split up to EXACT_SPLITS_MAX_VALUES values, else
    RANDOM_SPLITS random ones drawn with a fixed seed, the observed split counted once)."""
    pooled, n = np.asarray([*a, *b], dtype=np.float64), len(a)
    if n == 0 or n == len(pooled):
        return float("nan")
    total = pooled.sum()
    observed = abs(pooled[:n].mean() - pooled[n:].mean())

    def far(first_sum: float) -> bool:  # a split's |difference of means|, from its first sum
        diff = first_sum / n - (total - first_sum) / (len(pooled) - n)
        return abs(diff) >= observed - 1e-12 * max(1.0, observed)

    if len(pooled) <= EXACT_SPLITS_MAX_VALUES:
        hits = [
            far(pooled[list(idx)].sum()) for idx in itertools.combinations(range(len(pooled)), n)
        ]
        return sum(hits) / len(hits)
    rng = np.random.default_rng(0)
    hits = sum(far(pooled[rng.permutation(len(pooled))[:n]].sum()) for _ in range(RANDOM_SPLITS))
    return (hits + 1) / (RANDOM_SPLITS + 1)


def pair_table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines comparing, per task and delay, each recurrent core with the plain core of
    its family ("lstm" or "gru") where both ran: the difference of their mean greedy success
    (final success where a run has no greedy evaluation) and ``permutation_p`` over the seeds;
    [] where there is no such pair."""
    from rlgate.cores import CORES

    groups: dict[tuple[str, int], dict[str, list[float]]] = {}
    greedy = all("greedy_success" in r for r in records)
    metric = "greedy_success" if greedy else "final_success"
    for r in records:
        groups.setdefault((r["task"], r["delay"]), {}).setdefault(r["core"], []).append(r[metric])
    rows = []
    for (task, delay), by_core in sorted(groups.items()):
        for core in sorted(by_core, key=_core_key):
            base = CORES[core].family if core in CORES else None
            if base not in ("lstm", "gru") or core == base or base not in by_core:
                continue
            a, b = by_core[core], by_core[base]
            diff = statistics.fmean(a) - statistics.fmean(b)
            rows.append(
                f"| {task} | {delay} | {core} | {base} | {len(a)} / {len(b)} | {diff:+.3f} | "
                f"{permutation_p(a, b):.3f} |"
            )
    if not rows:
        return []
    what = "greedy success" if greedy else "final success"
    return [
        f"Each core against the plain core of its family: the difference of their mean {what} "
        "and the two-sided permutation test's p over the splits of their seeds' values:",
        "",
        "| task | delay | core | against | seeds | difference | p |",
        "|---|---:|---|---|---:|---:|---:|",
        *rows,
    ]


def write_tables(
    rows: list[dict[str, Any]], out: Path, preamble: list[str] = (), after: list[str] = ()
) -> tuple[Path, Path]:
    """results.csv and results.md under ``out`` (``preamble``: lines put above the table;
    ``after``: lines put below it, such as ``run_table``'s)."""
    out = Path(out)
    csv_path, md_path = out / "results.csv", out / "results.md"
    fields = list(dict.fromkeys(k for r in rows for k in r))  # greedy columns where some have them
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    greedy = "greedy_success_mean" in fields
    lines = [
        *preamble,
        *([""] if preamble else []),
        "| task | delay | core | env steps | final success (mean ± std) "
        "| success over training (mean ± std) | steps to 0.9 (mean) | seeds at 0.9 |"
        + (" greedy success (mean ± std) | greedy seeds at 0.9 |" if greedy else ""),
        "|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if greedy else ""),
    ]
    for r in rows:
        steps = r["steps_to_0.9_mean"]
        line = (
            f"| {r['task']} | {r['delay']} | {r['core']} | {r['env_steps']:,} | "
            f"{r['final_success_mean']:.3f} ± "
            f"{r['final_success_std']:.3f} | {r['mean_success_mean']:.3f} ± "
            f"{r['mean_success_std']:.3f} | {'-' if steps is None else f'{steps:,}'} | "
            f"{r['seeds_reaching_0.9']}/{r['seeds']} |"
        )
        if greedy:
            line += (
                f" {r['greedy_success_mean']:.3f} ± {r['greedy_success_std']:.3f} | "
                f"{r['greedy_seeds_at_0_9']}/{r['greedy_seeds']} |"
                if "greedy_success_mean" in r
                else " - | - |"
            )
        lines.append(line)
    if after:
        lines += ["", *after]
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
            what = DELAY_OPTIONS.get(task, "delay")
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
            if r["core"] == core and r["gate_hist"]:  # the memoryless control has none
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
        if r["core"] == core and r["gate_hist"]:
            counts = [a + b for a, b in zip(counts, r["gate_hist"])]
    total = sum(counts)
    if not total:
        return math.nan
    return (sum(counts[:eps_bins]) + sum(counts[-eps_bins:])) / total
