"""POPGym's benchmark on rlgate's cores: every ported env at each difficulty x core x seed, the
same PPO agent for every core (recipe "popgym"), scored as POPGym scores (MMER). Driven by
``scripts/reproduce.py --preset popgym``; tables and figures: ``rlgate.popgym_report``.

MMER (POPGym's max-mean episodic reward): the mean return of the episodes that end in each
block of ``BLOCK_STEPS`` env steps (POPGym's 65,536-step train batch), maxed over training.
A run's result, with its block curve and provenance, is written atomically to
``{out}/results/{run}.json`` when it ends (``rlgate.sweep.run_sweep``: resumable, finished runs
are skipped); TensorBoard runs go to ``{out}/tb/{env}{level}/{core}-s{seed}``.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

LEVELS = ("Easy", "Medium", "Hard")
SUITE_CORES = ("mlp", "lstm", "gru", "ur-lstm", "ur-gru", "c-lstm")
#: POPGym's train batch: MMER's blocks
BLOCK_STEPS = 65_536


@dataclass(frozen=True)
class SuiteRun:
    env: str  # popgym's name, e.g. "RepeatPrevious"
    level: str  # Easy, Medium or Hard
    core: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.env}{self.level}__{self.core}__s{self.seed}"

    @property
    def env_id(self) -> str:
        return f"rlgate/popgym-{self.env}{self.level}-v0"


@dataclass(frozen=True)
class Suite:
    """What the benchmark runs: envs x levels x cores x seeds, each the recipe ``recipe`` on
    the run's env with ``settings`` over it."""

    cores: tuple[str, ...]
    levels: tuple[str, ...]
    seeds: tuple[int, ...]
    #: popgym's names of the envs (empty: every ported one, ``rlgate.envs.POPGYM``)
    envs: tuple[str, ...] = ()
    recipe: str = "popgym"
    settings: dict[str, Any] = field(default_factory=dict)

    def env_names(self) -> tuple[str, ...]:
        if self.envs:
            return self.envs
        from rlgate.envs import POPGYM

        return tuple(POPGYM)

    def runs(self) -> list[SuiteRun]:
        return [
            SuiteRun(env, level, core, seed)
            for env in self.env_names()
            for level in self.levels
            for core in self.cores
            for seed in self.seeds
        ]

    def budget(self) -> int:
        return self.train_config(self.runs()[0], Path("sweeps")).total_timesteps

    def train_config(self, run: SuiteRun, out: Path):
        from rlgate.config import TrainConfig

        settings = {"device": "cpu", **self.settings}
        return TrainConfig.from_recipe(
            self.recipe,
            **settings,
            env=run.env_id,
            core=run.core,
            seed=run.seed,
            logdir=str(out / "tb" / f"{run.env}{run.level}"),
            run_name=f"{run.core}-s{run.seed}",
            progress=False,
            checkpoint_interval=10**9,
        )

    def run(self, run: SuiteRun, out: Path) -> dict[str, Any]:
        """Train one run and write its result file; returns the result."""
        from rlgate.provenance import provenance, sweep_threads, write_result
        from rlgate.train import Trainer

        sweep_threads()
        cfg = self.train_config(run, out)
        run_dir = Path(cfg.logdir) / cfg.run_name
        if run_dir.exists():  # left by a killed sweep: start it over
            shutil.rmtree(run_dir)
        trainer = Trainer(cfg)
        blocks = BlockMeans(trainer.steps_per_update)

        def collect(version):
            rollout, episodes = trainer.worker.collect(version)
            blocks.add(episodes.stats.get("return"))
            return rollout, episodes

        result = trainer.run(collect=collect)
        if result.interrupted:  # stopped by a signal: no result; a resumed sweep runs it again
            raise KeyboardInterrupt
        curve = blocks.curve()
        means = [m for _, m, _ in curve]
        record = {
            **asdict(run),
            "steps": result.global_step,
            "mmer": max(means) if means else float("nan"),
            "final": means[-1] if means else float("nan"),
            "curve": curve,
            "config": cfg.to_dict(),
            "provenance": provenance(),
        }
        return write_result(out, run.name, record)

    @staticmethod
    def headline(record: dict[str, Any]) -> str:
        return f"MMER {record['mmer']:.3f}"


class BlockMeans:
    """Mean episodic return per block of ``BLOCK_STEPS`` env steps (whole updates; a block
    ends at the first update that reaches its size), from the returns of the episodes each
    update finished."""

    def __init__(self, steps_per_update: int):
        self.per_update = steps_per_update
        self.steps = 0
        self.block_steps, self.total, self.count = 0, 0.0, 0
        self.blocks: list[tuple[int, float, int]] = []

    def add(self, returns: torch.Tensor | None) -> None:
        self.steps += self.per_update
        self.block_steps += self.per_update
        if returns is not None and returns.numel():
            self.total += float(returns.double().sum())
            self.count += int(returns.numel())
        if self.block_steps >= BLOCK_STEPS:
            self._close()

    def _close(self) -> None:
        if self.count:
            self.blocks.append((self.steps, self.total / self.count, self.count))
        self.block_steps, self.total, self.count = 0, 0.0, 0

    def curve(self) -> list[tuple[int, float, int]]:
        """[(env step at the block's end, mean return, episodes)], the last partial block
        included where it holds an episode."""
        if self.block_steps:
            self._close()
        return list(self.blocks)


#: the benchmark: SUITE_CORES x every ported env x LEVELS x 3 seeds
SUITE = Suite(cores=SUITE_CORES, levels=LEVELS, seeds=(1, 2, 3))
