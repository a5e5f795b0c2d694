"""IMPALA's actor processes: they step their own envs with a lagged copy of the learner's
parameters and send unrolls to the learner through shared memory.

The learner owns ``num_actors * queue_size`` unroll slots (dicts of shared-memory tensors) and
two queues of slot numbers: free and full. An actor takes a free slot, fills it with an unroll
(acting with the parameters of version v, read from shared memory at the start of the unroll),
and puts (slot, v, episode statistics) on the full queue; the learner copies the slot, frees it
and trains. After every update the learner writes its parameters into shared memory and bumps
the version, so the policy lag of an unroll is (learner updates so far) - v.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

import torch
import torch.multiprocessing as mp

from rlgate.agents.rollout import EpisodeLog, Rollout, RolloutWorker

_POLL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: Rollout fields copied through a slot as they are (obs and the start state are split up)
_FIELDS = (
    "prev_action",
    "prev_reward",
    "is_first",
    "actions",
    "logp",
    "values",
    "rewards",
    "terminated",
    "truncated",
    "final_values",
    "bootstrap_value",
)


def _slot_like(r: Rollout) -> dict[str, torch.Tensor]:
    slot = {f"obs.{k}": torch.empty_like(v) for k, v in r.obs.items()}
    for name in _FIELDS:
        slot[name] = torch.empty_like(getattr(r, name))
    for i, s in enumerate(r.states[0]):
        slot[f"state.{i}"] = torch.empty_like(s)
    return {k: v.share_memory_() for k, v in slot.items()}


def _write(slot: dict[str, torch.Tensor], r: Rollout) -> None:
    for k, v in r.obs.items():
        slot[f"obs.{k}"].copy_(v)
    for name in _FIELDS:
        slot[name].copy_(getattr(r, name))
    for i, s in enumerate(r.states[0]):
        slot[f"state.{i}"].copy_(s)


def _read(slot: dict[str, torch.Tensor], version: int, device) -> Rollout:
    get = {k: v.to(device, copy=True) for k, v in slot.items()}
    obs = {k[4:]: v for k, v in get.items() if k.startswith("obs.")}
    states = [tuple(get[k] for k in sorted(get) if k.startswith("state."))]
    return Rollout(
        obs=obs, states=states, param_version=version, **{name: get[name] for name in _FIELDS}
    )


def _die_with_parent(parent: int) -> None:
    """End this process when its parent (the learner) dies, whatever kills it.

    Linux delivers SIGKILL to this process at the parent's death (``PR_SET_PDEATHSIG``);
    everywhere, a daemon thread also watches the parent's pid and leaves once it has changed
    (the process was re-parented). An actor also ignores SIGINT: Ctrl-C reaches the whole
    process group, and the learner, which finishes its update first, stops its actors itself.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still works
    if os.getppid() != parent:  # the learner died before the request took effect (or before
        # this process got here: its start-up imports take seconds)
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="rlgate-learner-watch", daemon=True).start()


def _actor_main(
    actor_id: int,
    cfg_dict: dict,
    params: dict,
    version,
    slots,
    free,
    full,
    seed: int,
    learner: int,
) -> None:
    from rlgate.agents.actor_critic import build_model
    from rlgate.config import TrainConfig
    from rlgate.envs import make_vec

    _die_with_parent(learner)
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(cfg_dict)
    env = make_vec(cfg.env, cfg.impala.envs_per_actor, device="cpu", seed=seed, **cfg.env_options)
    model = build_model(cfg, env)
    gen = torch.Generator().manual_seed(seed + 1)
    worker = RolloutWorker(
        env, model, cfg.unroll_length, generator=gen, novelty_bonus=cfg.novelty_bonus
    )
    while True:
        v = version.value
        model.load_state_dict(params)
        rollout, log = worker.collect(param_version=v)
        index = free.get()
        _write(slots[index], rollout)
        full.put((index, v, log.stats))


class ActorPool:
    """``num_actors`` actor processes feeding a learner (see the module docstring).

    Args:
        cfg: the run's TrainConfig (its impala section sizes the pool).
        model: the learner's model; its parameters are published to the actors.
        example: an unroll of one actor's shape, to size the shared slots.
        device: where the learner wants its unrolls.
        seed: base of the actors' seeds (default: cfg.seed; torchrun ranks pass their own).
    """

    def __init__(
        self, cfg, model: torch.nn.Module, example: Rollout, device, seed: int | None = None
    ):
        ctx = mp.get_context("spawn")
        self.device = device
        self.params = {
            k: v.detach().cpu().clone().share_memory_() for k, v in model.state_dict().items()
        }
        self.version = ctx.Value("q", 0)
        n_slots = cfg.impala.num_actors * cfg.impala.queue_size
        self.slots = [_slot_like(example) for _ in range(n_slots)]
        self.free, self.full = ctx.Queue(), ctx.Queue()
        for i in range(n_slots):
            self.free.put(i)
        self.processes = []
        for a in range(cfg.impala.num_actors):
            p = ctx.Process(
                target=_actor_main,
                args=(
                    a,
                    cfg.to_dict(),
                    self.params,
                    self.version,
                    self.slots,
                    self.free,
                    self.full,
                    (cfg.seed if seed is None else seed) + 1000 * (a + 1),
                    os.getpid(),
                ),
                daemon=True,
            )
            p.start()
            self.processes.append(p)

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """Copy the learner's parameters to the actors and set their version."""
        for k, v in model.state_dict().items():
            self.params[k].copy_(v.detach())
        self.version.value = version

    def get(self, timeout: float = 600.0) -> tuple[Rollout, EpisodeLog]:
        """The next unroll from any actor; RuntimeError if an actor died or none came."""
        waited = 0.0
        while True:
            try:
                index, version, stats = self.full.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                waited += _POLL_SECONDS
                dead = [(i, p.exitcode) for i, p in enumerate(self.processes) if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"IMPALA actor process {dead[0][0]} exited with code {dead[0][1]}; stopping"
                    ) from None
                if waited >= timeout:
                    raise RuntimeError(f"no unroll from the actors in {timeout:.0f}s") from None
        rollout = _read(self.slots[index], version, self.device)
        self.free.put(index)
        return rollout, EpisodeLog(stats)

    def close(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(timeout=5)


def pool_collector(pool: ActorPool, model: torch.nn.Module) -> Any:
    """A ``collect(version)`` for Trainer.run: publish the parameters, take the next unroll."""

    def collect(version: int):
        pool.publish(model, version)
        return pool.get()

    return collect
