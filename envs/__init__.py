"""Memory environments for rlgate, installed as ``rlgate.envs`` (the folder is ``envs/``).

>>> from rlgate.envs import make_vec
>>> env = make_vec("rlgate/PassiveMatch-v0", num_envs=64, delay=30, seed=0)
>>> obs, info = env.reset()                    # obs: dict of [N, ...] tensors
>>> obs, reward, terminated, truncated, info = env.step(actions)   # actions: [N] long

Tasks (``ENVS``): PassiveMatch and ActiveMatch (paper.md section 2), TMaze, and MemoryS7..S17
(a tensor clone of minigrid's MemoryEnv). Any other gymnasium id, every minigrid id included,
runs through gymnasium's vector envs behind the same API. Importing this package registers the
``rlgate/`` ids with gymnasium (as minigrid does), so ``gymnasium.make("rlgate/TMaze-v0")``
gives a standard single env with numpy observations.
"""

if __name__ != "rlgate.envs":  # the folder must not be importable as a generic "envs"
    raise ImportError(
        f"this folder is the package rlgate.envs, imported here as {__name__!r}: "
        "install rlgate from the checkout (pip install -e .) and import rlgate.envs"
    )

from types import MappingProxyType
from typing import Any

import gymnasium as gym
import torch

from rlgate.envs.base import TensorEnv, check_options
from rlgate.envs.gym_vector import GymVectorEnv
from rlgate.envs.match import MatchEnv
from rlgate.envs.memory import SIZES, MemoryEnv
from rlgate.envs.tmaze import TMazeEnv

__all__ = ["ENVS", "GymVectorEnv", "MatchEnv", "MemoryEnv", "TMazeEnv", "TensorEnv", "make_vec"]

#: The tensor tasks: id -> (class, fixed options). Read-only.
ENVS: MappingProxyType[str, tuple[type[TensorEnv], dict[str, Any]]] = MappingProxyType(
    {
        "rlgate/PassiveMatch-v0": (MatchEnv, {"active": False}),
        "rlgate/ActiveMatch-v0": (MatchEnv, {"active": True}),
        "rlgate/TMaze-v0": (TMazeEnv, {}),
        **{f"rlgate/MemoryS{s}-v0": (MemoryEnv, {"size": s}) for s in SIZES},
    }
)


def make_single(env_id: str, **options: Any) -> gym.Env:
    """The gymnasium entry point of the ``rlgate/`` ids: one copy, numpy observations."""
    from rlgate.envs.single import SingleEnv

    cls, fixed = ENVS[env_id]
    _check(cls, fixed, options)
    return SingleEnv(cls, **fixed, **options)


def _check(cls: type, fixed: dict[str, Any], options: dict[str, Any]) -> None:
    clash = sorted(set(fixed) & set(options))
    if clash:
        raise ValueError(f"option(s) {', '.join(clash)} are fixed by this env id")
    check_options(cls, options)


def make_vec(
    env_id: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    **options: Any,
):
    """The batched env for ``env_id``: torch tensors in and out on ``device``.

    Args:
        env_id: a key of ``ENVS`` (tensor tasks, stepped on ``device``) or any gymnasium id
            such as "MiniGrid-MemoryS7-v0" (gymnasium vector env, converted to tensors).
        num_envs: number of copies N (>= 1).
        device: "cpu", "cuda", "cuda:1", ...
        seed: RNG seed; the same seed gives the same trajectories on CPU.
        **options: the task's options (e.g. ``delay`` for the Match tasks).

    Raises:
        ValueError: unknown id or option, invalid option value, num_envs or device.
    """
    if env_id in ENVS:
        cls, fixed = ENVS[env_id]
        _check(cls, fixed, options)
        return cls(num_envs=num_envs, device=device, seed=seed, **fixed, **options)
    if env_id.startswith("MiniGrid-") or env_id.startswith("BabyAI-"):
        import minigrid  # noqa: F401  (registers minigrid's ids)
    if env_id in gym.registry:
        return GymVectorEnv(env_id, num_envs, device=device, seed=seed, **options)
    raise ValueError(
        f"unknown env {env_id!r}; valid envs: {', '.join(ENVS)}, or any gymnasium id "
        "(e.g. MiniGrid-MemoryS7-v0)"
    )


for _env_id in ENVS:
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point="rlgate.envs:make_single", kwargs={"env_id": _env_id})
