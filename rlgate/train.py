"""The training loop behind ``rlgate train``: envs, model, learner, logging, checkpoints."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlgate import checkpoint as ckpt
from rlgate.agents.actor_critic import build_model
from rlgate.agents.registry import AGENTS
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import TrainConfig
from rlgate.distributed import World, close_world, join, rank_device, world_from_env
from rlgate.envs import make_vec
from rlgate.envs.base import pick_device
from rlgate.metrics import Logger, episode_means
from rlgate.optim import Adam
from rlgate.run_dir import create_run_dir
from rlgate.runtime import StopSignals

log = logging.getLogger(__name__)


def merge_ranks(gathered: list[tuple[dict[str, float], dict]]) -> tuple[dict[str, float], dict]:
    """Per-rank (update metrics, finished-episode stats) -> metrics averaged over ranks and the
    episodes of all ranks together."""
    metrics = {k: sum(m[k] for m, _ in gathered) / len(gathered) for k in gathered[0][0]}
    stats: dict[str, torch.Tensor] = {}
    for key in {k for _, st in gathered for k in st}:
        stats[key] = torch.cat([st[key] for _, st in gathered if key in st])
    return metrics, stats


@dataclass
class TrainResult:
    """What a run did: its folder, updates and env steps, and per-update metrics (from its
    first update on, those before a resume included)."""

    run_dir: Path
    updates: int
    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    #: the signal that stopped the run early (SIGINT or SIGTERM), if one did
    signal: str | None = None


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
        self.agent = AGENTS[cfg.agent]
        if env is not None and self.agent.actor_processes(cfg) > 0:
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
        # torch's fused Adam kernel (one pass over each parameter per step, CPU and CUDA)
        # without torch.optim's import of torch._dynamo (rlgate.optim). (Learner.gradient_step
        # moves the version counters it leaves as they were.)
        self.optimizer = Adam(self.model.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.learner = self.agent.learner(
            self.model,
            cfg.section,
            cfg.gamma,
            cfg.max_grad_norm,
            self.optimizer,
            self.world,
            reward_scale=cfg.reward_scale,
            seen_coef=cfg.seen_loss,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.update_index, self.global_step = 0, 0
        #: per-update metrics from update 0 on, and the latest mean of each episode statistic:
        #: checkpointed, so that a resumed run's result holds the whole run
        self.history: list[dict[str, float]] = []
        self.recent: dict[str, float] = {}
        #: the global step of the last checkpoint written (None: none yet)
        self.saved_step: int | None = None
        #: env steps of one update over all ranks; training stops at final_step (at least one
        #: update), counted in env steps so that a resume with another world size lands there
        self.steps_per_update = cfg.batch_size * self.world.size
        self.final_step = max(cfg.total_timesteps, self.steps_per_update)
        self.worker = self._worker()
        self.video = None
        if cfg.video_interval and self.world.is_main:
            self.video = self._video_env(env)
        if resume is not None:
            self._restore(resume)
        self.world.broadcast_module(self.model)
        self.resumed_step = self.global_step if resume is not None else None
        self.run_dir = self._run_dir() if self.num_updates or resume is None else None

    def _video_env(self, env):
        """The env videos are played in (its own copy and streams: videos change nothing in
        training), checked now, before anything is written."""
        from rlgate import video

        if env is not None:
            raise ValueError(
                "--video-interval needs an env id (videos play in an env of their own)"
            )
        venv = video.video_env(self.cfg.env, self.cfg.env_options, self.device, self.cfg.seed + 2)
        venv.reset()
        venv.render(0)  # ValueError where the env has no picture
        self.video_generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 3)
        return venv

    def _worker(self) -> RolloutWorker:
        """A rollout worker that starts new episodes in every env."""
        cfg = self.cfg
        chunk = self.agent.state_interval(cfg)
        gen, bonus = self.generator, cfg.novelty_bonus
        return RolloutWorker(
            self.env, self.model, cfg.unroll_length, chunk, gen, novelty_bonus=bonus
        )

    def _run_dir(self) -> Path:
        """Rank 0 creates the run folder; every rank gets its path (or the same error)."""
        made: tuple[str, str] = ("", "")
        if self.world.is_main:
            try:
                made = (str(create_run_dir(self.cfg)), "")
            except ValueError as err:
                made = ("", str(err))
        path, error = self.world.broadcast_object(made)
        if error:
            raise ValueError(error)
        return Path(path)

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
                "actions": self.generator.get_state(),
            },
            # where the envs and the rollout stand between two updates: with these a
            # single-process resume continues the very same run
            "env": self.env.state_dict() if hasattr(self.env, "state_dict") else None,
            "rollout": self.worker.state_dict(),
            "history": self.history,
            "recent": self.recent,
        }

    def save(self) -> Path:
        """Write the checkpoint and, beside it, the config it was trained with (rank 0 only;
        every rank holds the same parameters)."""
        path = self.run_dir / ckpt.CHECKPOINT
        if self.world.is_main:
            ckpt.save(path, self._payload())
            self._write_config()
            self.saved_step = self.global_step
        return path

    def _write_config(self) -> None:
        text = json.dumps(self.cfg.to_dict(), indent=2).encode()
        ckpt.write_atomic(self.run_dir / "config.json", lambda f: f.write(text))

    def _restore(self, data: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ckpt.CheckpointError(f"checkpoint does not fit this model: {err}") from None
        self.update_index, self.global_step = data["update"], data["global_step"]
        self.saved_step = self.global_step
        # (older checkpoints have no history: the result then starts at the resume)
        self.history = list(data.get("history", []))
        self.recent = dict(data.get("recent", {}))
        if self.world.distributed or data.get("world_size", 1) > 1:
            # rank r's streams are new ones, drawn from (seed, rank, update): a checkpoint holds
            # rank 0's alone, and the world size may have changed
            seed = self.world.seed(self.cfg.seed) + 7919 * self.update_index
            if hasattr(self.env, "generator"):
                self.env.generator.manual_seed(seed)
            self.generator.manual_seed(seed + 1)
            self.worker = self._worker()  # new episodes from the new streams
            return
        rng = data["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.generator.set_state(rng["actions"])
        if data.get("env") is not None and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(data["env"])
            self.worker.load_state_dict(data["rollout"])
        else:  # a gymnasium env's state can't be saved: its episodes start over
            log.info("resume: the envs start new episodes (their state is not in checkpoints)")

    # ----------------------------------------------------------------- the loop
    @torch.no_grad()
    def _gates(self, r) -> dict[str, torch.Tensor]:
        """Gates at the first step of the unroll just trained on ({} for the memoryless core)."""
        return self.model.unroll_gates(r, steps=1)[0]

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
        if self.num_updates == 0:  # a resumed run that has reached its budget
            return TrainResult(self.run_dir, self.update_index, self.global_step, self.history)
        if collect is None and self.agent.actor_processes(cfg) > 0:
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
        cfg, main = self.cfg, self.world.is_main
        result = TrainResult(self.run_dir, self.update_index, self.global_step, self.history)
        if self.num_updates == 0:
            return result
        logger = None
        if main:
            if self.resumed_step is None:  # a resume keeps the checkpoint's config.json
                self._write_config()
            # a resume drops what a killed run logged after its checkpoint, not the step of
            # the checkpoint itself
            purge = None if self.resumed_step is None else self.resumed_step + 1
            logger = Logger(str(self.run_dir), cfg.to_dict(), purge_step=purge)
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
        recent = self.recent
        t_start, steps_start = time.perf_counter(), self.global_step

        def announce(name: str) -> None:
            if main:
                print(
                    f"rlgate: {name}: stopping after this update with a checkpoint "
                    f"({name} again stops at once, keeping the last checkpoint)",
                    file=sys.stderr,
                    flush=True,
                )

        try:
            with StopSignals(announce) as stop:
                while self.global_step + self.steps_per_update <= self.final_step:
                    if self._update(collect, logger, result, recent, t_start, steps_start, stop):
                        break
                    if bar is not None:
                        bar.update(self.steps_per_update)
                        shown = {"sps": f"{result.history[-1]['perf/sps']:.0f}"}
                        shown["ret"] = f"{recent.get('charts/episodic_return', 0):.2f}"
                        if "charts/success_rate" in recent:  # envs that say what success is
                            shown["success"] = f"{recent['charts/success_rate']:.2f}"
                        bar.set_postfix(shown)
                if self.saved_step != self.global_step:
                    self.save()
                if stop.signum is not None:
                    result.interrupted = True
                    result.signal = signal.Signals(stop.signum).name
        except KeyboardInterrupt:  # a second signal: the last checkpoint stays as it is
            result.interrupted = True
            result.signal = "SIGINT"
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        result.updates, result.global_step = self.update_index, self.global_step
        return result

    def _update(self, collect, logger, result, recent, t_start, steps_start, stop) -> bool:
        """One update: collect, learn, log, maybe checkpoint. True when a stop signal (on
        any rank) ends the run after it."""
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = max(0.0, 1.0 - self.global_step / self.final_step)
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate * frac
        # the parameters' version is the number of learner updates so far
        rollout, episodes = collect(self.update_index)
        metrics = self.learner.update(rollout, self.generator)
        if self.agent.off_policy:
            metrics["policy_lag"] = float(self.update_index - rollout.param_version)
        # every rank sees every rank's stop request here, so that all stop after this update
        gathered = self.world.gather_objects((metrics, episodes.stats, stop.signum is not None))
        metrics, stats = merge_ranks([(m, st) for m, st, _ in gathered])
        stopping = any(flag for _, _, flag in gathered)
        self.update_index += 1
        self.global_step += self.steps_per_update
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
            if self.video is not None and self.update_index % cfg.video_interval == 0:
                from rlgate import video

                frames = video.record_episodes(self.video, self.model, 1, self.video_generator)
                logger.video("videos/episode", frames, self.global_step)
        if self.update_index % cfg.checkpoint_interval == 0:
            self.save()
        return stopping or (not self.world.distributed and stop.signum is not None)


def train(cfg: TrainConfig) -> TrainResult:
    """Run a whole training job from a config."""
    return Trainer(cfg).run()
