"""The training loop behind ``rlgate train``: envs, model, learner, logging, checkpoints."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlgate import checkpoint as ckpt
from rlgate.agents.actor_critic import build_model
from rlgate.agents.impala import IMPALA
from rlgate.agents.ppo import PPO
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import TrainConfig
from rlgate.distributed import World, close_world, join, rank_device, world_from_env
from rlgate.envs import make_vec
from rlgate.envs.base import resolve_device
from rlgate.metrics import Logger, episode_means

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def merge_ranks(gathered: list[tuple[dict[str, float], dict]]) -> tuple[dict[str, float], dict]:
    """Per-rank (update metrics, finished-episode stats) -> metrics averaged over ranks and the
    episodes of all ranks together."""
    metrics = {k: sum(m[k] for m, _ in gathered) / len(gathered) for k in gathered[0][0]}
    stats: dict[str, torch.Tensor] = {}
    for key in {k for _, st in gathered for k in st}:
        stats[key] = torch.cat([st[key] for _, st in gathered if key in st])
    return metrics, stats


def run_dir_for(cfg: TrainConfig) -> Path:
    if cfg.resume is not None:
        p = ckpt.checkpoint_path(cfg.resume)
        return p.parent
    env = cfg.env.replace("/", "-").replace(":", "-")
    name = cfg.run_name or f"{env}__{cfg.agent}__{cfg.core}__s{cfg.seed}__{int(time.time())}"
    return Path(cfg.logdir) / name


@dataclass
class TrainResult:
    """What a run did: its folder, updates and env steps, and per-update metrics."""

    run_dir: Path
    updates: int
    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False


class Trainer:
    """Builds everything from a TrainConfig and runs updates; ``run()`` is the whole job.

    Started by torchrun (WORLD_SIZE > 1), it is one rank of a data-parallel job (see
    ``rlgate.distributed``): ``cfg.num_envs`` envs per rank, seeds offset per rank, gradients
    averaged, and rank 0 alone writes the run folder.
    """

    def __init__(self, cfg: TrainConfig, world: World | None = None, env=None):
        self.cfg = cfg
        self.world = world or world_from_env(cfg.dist_timeout)
        self.device = pick_device(rank_device(cfg.device, self.world))
        resume = ckpt.load(cfg.resume) if cfg.resume is not None else None
        if resume is not None:
            ckpt.check_compatible(resume["config"], cfg.to_dict())
        join(self.world, self.device)
        seed = self.world.seed(cfg.seed)  # rank 0: cfg.seed
        torch.manual_seed(cfg.seed)  # the same initial parameters on every rank
        if env is not None and cfg.agent == "impala" and cfg.impala.num_actors > 0:
            raise ValueError(
                "impala.num-actors > 0 needs an env id: actor processes make their own envs"
            )
        self.env = make_vec(
            cfg.env if env is None else env,
            cfg.num_envs,
            device=self.device,
            seed=seed,
            **cfg.env_options,
        )
        self.model = build_model(cfg, self.env).to(self.device)
        # Refuse a backend that can't run here now, before anything is written.
        core = self.model.core
        dtype = next(core.parameters()).dtype
        core.resolve_backend(torch.zeros(1, 1, core.input_size, device=self.device, dtype=dtype))
        torch.manual_seed(seed)
        # foreach: one multi-tensor kernel per update instead of a loop over parameters
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.learning_rate, eps=1e-5, foreach=True
        )
        learner_cls = PPO if cfg.agent == "ppo" else IMPALA
        sub = cfg.ppo if cfg.agent == "ppo" else cfg.impala
        self.learner = learner_cls(
            self.model,
            sub,
            cfg.gamma,
            cfg.max_grad_norm,
            self.optimizer,
            self.world,
            reward_scale=cfg.reward_scale,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.update_index, self.global_step = 0, 0
        if resume is not None:
            self._restore(resume)
        #: env steps of one update over all ranks; training stops at final_step (at least one
        #: update), counted in env steps so that a resume with another world size lands there
        self.steps_per_update = cfg.batch_size * self.world.size
        self.final_step = max(cfg.total_timesteps, self.steps_per_update)
        self.world.broadcast_module(self.model)
        self.run_dir = Path(self.world.broadcast_object(str(run_dir_for(cfg))))
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        chunk = cfg.ppo.bptt if cfg.agent == "ppo" else None
        self.worker = RolloutWorker(self.env, self.model, cfg.unroll_length, chunk, self.generator)

    @property
    def num_updates(self) -> int:
        """Updates left to run."""
        return max(0, (self.final_step - self.global_step) // self.steps_per_update)

    # ----------------------------------------------------------------- checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "update": self.update_index,
            "global_step": self.global_step,
            "world_size": self.world.size,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "env": self.env.generator.get_state() if hasattr(self.env, "generator") else None,
                "actions": self.generator.get_state(),
            },
        }

    def save(self) -> Path:
        """Write the checkpoint (rank 0 only; every rank holds the same parameters)."""
        path = self.run_dir / ckpt.CHECKPOINT
        if self.world.is_main:
            ckpt.save(path, self._payload())
        return path

    def _restore(self, data: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ckpt.CheckpointError(f"checkpoint does not fit this model: {err}") from None
        self.update_index, self.global_step = data["update"], data["global_step"]
        if self.world.distributed or data.get("world_size", 1) > 1:
            # rank r's streams are new ones, drawn from (seed, rank, update): a checkpoint holds
            # rank 0's alone, and the world size may have changed
            seed = self.world.seed(self.cfg.seed) + 7919 * self.update_index
            if hasattr(self.env, "generator"):
                self.env.generator.manual_seed(seed)
            self.generator.manual_seed(seed + 1)
            return
        rng = data["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng["env"] is not None and hasattr(self.env, "generator"):
            self.env.generator.set_state(rng["env"])
        self.generator.set_state(rng["actions"])

    # ----------------------------------------------------------------- the loop
    @torch.no_grad()
    def _gates(self, r) -> dict[str, torch.Tensor]:
        """Gates at the first step of the unroll just trained on ({} for the memoryless core)."""
        x = self.model.core_features(
            {k: v[:1] for k, v in r.obs.items()}, r.prev_action[:1], r.prev_reward[:1]
        )[0]
        first = r.is_first[0].unsqueeze(-1)
        init = self.model.initial_state(first.shape[0], first.device)
        state = tuple(torch.where(first, s0, s) for s0, s in zip(init, r.states[0]))
        return self.model.core.gates(x, state)

    def _actor_pool(self):
        """IMPALA's actor processes, sized by an example unroll collected here on CPU."""
        import copy

        from rlgate.agents.actors import ActorPool

        cfg = self.cfg
        env = make_vec(
            cfg.env, cfg.impala.envs_per_actor, device="cpu", seed=cfg.seed, **cfg.env_options
        )
        cpu_model = copy.deepcopy(self.model).cpu()
        example, _ = RolloutWorker(env, cpu_model, cfg.unroll_length).collect()
        return ActorPool(cfg, self.model, example, self.device, self.world.seed(cfg.seed))

    def run(self, collect=None) -> TrainResult:
        """Train until total_timesteps. ``collect`` overrides where unrolls come from."""
        cfg = self.cfg
        pool = None
        if collect is None and cfg.agent == "impala" and cfg.impala.num_actors > 0:
            from rlgate.agents.actors import pool_collector

            pool = self._actor_pool()
            collect = pool_collector(pool, self.model)
        try:
            result = self._run(collect)
        finally:
            if pool is not None:
                pool.close()
        close_world(self.world)  # not after a failure: a broken group can't be torn down
        return result

    def _run(self, collect) -> TrainResult:
        cfg, world, main = self.cfg, self.world, self.world.is_main
        logger = None
        if main:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            logger = Logger(str(self.run_dir), cfg.to_dict(), purge_step=self.global_step or None)
        result = TrainResult(self.run_dir, self.update_index, self.global_step)
        bar = None
        if cfg.progress and main:
            from tqdm import tqdm

            bar = tqdm(
                total=self.final_step,
                initial=self.global_step,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                mininterval=1.0,
            )
        collect = collect or (lambda version: self.worker.collect(version))
        recent: dict[str, float] = {}
        t_start, steps_start = time.perf_counter(), self.global_step
        try:
            while self.global_step + self.steps_per_update <= self.final_step:
                if cfg.anneal_lr:
                    frac = max(0.0, 1.0 - self.global_step / self.final_step)
                    for group in self.optimizer.param_groups:
                        group["lr"] = cfg.learning_rate * frac
                # the parameters' version is the number of learner updates so far
                rollout, episodes = collect(self.update_index)
                metrics = self.learner.update(rollout, self.generator)
                if cfg.agent == "impala":
                    metrics["policy_lag"] = float(self.update_index - rollout.param_version)
                metrics, stats = merge_ranks(world.gather_objects((metrics, episodes.stats)))
                self.update_index += 1
                steps = self.steps_per_update
                self.global_step += steps
                sps = (self.global_step - steps_start) / (time.perf_counter() - t_start)
                scalars = {f"losses/{k}": v for k, v in metrics.items() if k != "policy_lag"}
                scalars["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
                scalars["perf/sps"] = sps
                if "policy_lag" in metrics:
                    scalars["perf/policy_lag"] = metrics["policy_lag"]
                means = episode_means(stats)
                recent.update(means)
                result.history.append({**scalars, **recent})
                if logger is not None:
                    logger.scalars({**scalars, **means}, self.global_step)
                    if self.update_index % cfg.gate_log_interval == 0:
                        gates = self._gates(rollout)
                        if gates:
                            logger.gates(gates, self.global_step)
                if self.update_index % cfg.checkpoint_interval == 0:
                    self.save()
                if bar is not None:
                    bar.update(steps)
                    shown = {"sps": f"{sps:.0f}"}
                    shown["ret"] = f"{recent.get('charts/episodic_return', 0):.2f}"
                    if "charts/success_rate" in recent:  # envs that say what success is
                        shown["success"] = f"{recent['charts/success_rate']:.2f}"
                    bar.set_postfix(shown)
            self.save()
        except KeyboardInterrupt:
            self.save()
            result.interrupted = True
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        result.updates, result.global_step = self.update_index, self.global_step
        return result


def train(cfg: TrainConfig) -> TrainResult:
    """Run a whole training job from a config."""
    return Trainer(cfg).run()
