"""Tables and figures of the POPGym benchmark's results (``rlgate.popgym_suite`` runs it).

A result is the JSON record ``Suite.run`` writes per run: env, level, core, seed, MMER, the
last block's mean return, the block curve, config and provenance. Returns of POPGym's envs lie
in [-1, 1]; the normalised score of a run is (MMER + 1) / 2, in [0, 1].
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from rlgate.popgym_suite import LEVELS, SUITE_CORES

#: POPGym's GRU (RLlib PPO, 10-15M steps), MMER as printed in third-party transcriptions of the
#: paper's appendix table; not checked against the paper itself (no copy of its table was at
#: hand), so shown as unconfirmed beside rlgate's numbers.
POPGYM_GRU_UNCONFIRMED = {
    ("RepeatFirst", "Easy"): 1.00,
    ("RepeatPrevious", "Easy"): 1.00,
    ("RepeatPrevious", "Medium"): -0.32,
    ("CountRecall", "Easy"): 0.18,
    ("PositionOnlyCartPole", "Easy"): 1.00,
    ("PositionOnlyCartPole", "Medium"): 1.00,
    ("PositionOnlyCartPole", "Hard"): 1.00,
    ("NoisyPositionOnlyCartPole", "Easy"): 0.995,
    ("NoisyPositionOnlyCartPole", "Medium"): 0.64,
}


def load_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(out, "results").glob("*.json"))]


def _core_key(core: str) -> tuple[int, str]:
    return (SUITE_CORES.index(core) if core in SUITE_CORES else len(SUITE_CORES)), core


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarize(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(cores in table order, one row per (env, level) that has results: {"env", "level",
    core: (mean, std, seeds)})."""
    cores = sorted({r["core"] for r in records}, key=_core_key)
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        cells.setdefault((r["env"], r["level"]), {}).setdefault(r["core"], []).append(r["mmer"])
    order = {name: i for i, name in enumerate(dict.fromkeys(r["env"] for r in records))}
    rows = []
    for (env, level), by_core in sorted(
        cells.items(), key=lambda kv: (order[kv[0][0]], LEVELS.index(kv[0][1]))
    ):
        row: dict[str, Any] = {"env": env, "level": level}
        for core in cores:
            values = by_core.get(core, [])
            row[core] = (*_mean_std(values), len(values))
        rows.append(row)
    return cores, rows


def normalised(rows: list[dict[str, Any]], cores: list[str]) -> dict[str, tuple[float, int]]:
    """Per core: the mean normalised score (MMER + 1) / 2 over the (env, level) cells where
    every core has a result (so that the cores are compared on the same cells), and how many
    cells that is."""
    full = [row for row in rows if all(row[c][2] for c in cores)]
    return {
        core: (statistics.fmean((row[core][0] + 1) / 2 for row in full) if full else float("nan"),
               len(full))
        for core in cores
    }  # fmt: skip


def _cell(value: tuple[float, float, int]) -> str:
    mean, std, n = value
    return "-" if not n else f"{mean:.3f} ± {std:.3f}"


def write_tables(records: list[dict[str, Any]], out: Path, header: list[str]) -> tuple[Path, Path]:
    """results.csv (one line per run) and results.md (MMER mean ± std over seeds per env and
    level, POPGym's GRU where a transcription gives it, and the normalised mean per core)."""
    out = Path(out)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "level", "core", "seed", "steps", "mmer", "final"])
        for r in sorted(records, key=lambda r: (r["env"], r["level"], r["core"], r["seed"])):
            w.writerow([r["env"], r["level"], r["core"], r["seed"], r["steps"],
                        f"{r['mmer']:.4f}", f"{r['final']:.4f}"])  # fmt: skip
    cores, rows = summarize(records)
    lines = [*header, ""]
    head = ["env", "level", *cores, "POPGym GRU (unconfirmed)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * 2 + "---:|" * (len(head) - 2))
    for row in rows:
        paper = POPGYM_GRU_UNCONFIRMED.get((row["env"], row["level"]))
        cells = [row["env"], row["level"], *(_cell(row[c]) for c in cores)]
        cells.append("-" if paper is None else f"{paper:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    norm = normalised(rows, cores)
    lines += ["", "| core | normalised MMER, mean over cells | cells |", "|---|---:|---:|"]
    lines += [f"| {c} | {m:.3f} | {n} |" for c, (m, n) in norm.items()]
    md_path = out / "results.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def describe(suite, records: list[dict[str, Any]]) -> list[str]:
    """The table's header: what ran, the budget, and which commits produced the results."""
    commits = sorted({(r.get("provenance") or {}).get("commit") or "unknown" for r in records})
    runs = len(suite.runs())
    return [
        f"POPGym on rlgate's cores: {len(records)} of {runs} runs done "
        f"({len(suite.cores)} cores x {len(suite.env_names())} envs x {len(suite.levels)} "
        f"levels x {len(suite.seeds)} seeds), recipe {suite.recipe!r}, "
        f"{suite.budget():,} env steps a run; MMER mean ± std over seeds.",
        "Commits: " + ", ".join(c[:10] for c in commits) + ".",
    ]


def write_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """mmer.png (MMER per env and level, one column per core, mean over seeds) and
    normalised.png (the normalised mean per core)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cores, rows = summarize(records)
    if not rows:
        return []
    grid = np.array([[row[c][0] for c in cores] for row in rows])
    fig, ax = plt.subplots(figsize=(1.2 * len(cores) + 3, 0.3 * len(rows) + 1.5))
    im = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(cores)), cores)
    ax.set_yticks(range(len(rows)), [f"{r['env']} {r['level']}" for r in rows])
    for i in range(len(rows)):
        for j in range(len(cores)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="MMER (mean over seeds)")
    ax.set_title("POPGym on rlgate's cores")
    fig.tight_layout()
    heat = Path(out) / "mmer.png"
    fig.savefig(heat, dpi=120)
    plt.close(fig)
    norm = normalised(rows, cores)
    fig, ax = plt.subplots(figsize=(1.0 * len(cores) + 2, 3))
    ax.bar(list(norm), [m for m, _ in norm.values()], color="tab:blue")
    ax.set_ylabel("normalised MMER, (MMER + 1) / 2")
    cells = next(iter(norm.values()))[1]
    ax.set_title(f"mean over the {cells} env-levels every core has")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    bars = Path(out) / "normalised.png"
    fig.savefig(bars, dpi=120)
    plt.close(fig)
    return [heat, bars]


def report(suite, out: Path) -> tuple[list[Path], str] | None:
    """Write the tables and figures of what has run under ``out``; (paths, the Markdown
    table), or None where nothing has run."""
    records = load_results(out)
    if not records:
        return None
    csv_path, md_path = write_tables(records, out, describe(suite, records))
    return [csv_path, md_path, *write_plots(records, out)], md_path.read_text()
