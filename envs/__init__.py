"""Memory environments for rlgate, installed as ``rlgate.envs`` (the folder is ``envs/``).

>>> from rlgate.envs import make_vec
>>> env = make_vec("rlgate/PassiveMatch-v0", num_envs=64, delay=30, seed=0)
>>> obs, info = env.reset()                    # obs: dict of [N, ...] tensors
>>> obs, reward, terminated, truncated, info = env.step(actions)   # actions: [N] long

Tasks (``ENVS``): PassiveMatch and ActiveMatch (docs/gates.md, the tasks), TMaze, MemoryS7..S17
(a tensor clone of minigrid's MemoryEnv), and POPGym's envs at its three difficulties
(``POPGYM``: ``rlgate/popgym-RepeatPreviousEasy-v0`` and so on, tensor clones of the popgym
package's). Any other gymnasium id, every minigrid id included,
runs through gymnasium's vector envs behind the same API (``module:EnvId`` imports the module
that registers it first). Importing this package registers the
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
from rlgate.envs.popgym_cards import (
    Autoencode,
    CountRecall,
    HigherLower,
    RepeatFirst,
    RepeatPrevious,
)
from rlgate.envs.popgym_control import (
    NoisyPositionOnlyCartPole,
    NoisyPositionOnlyPendulum,
    PositionOnlyCartPole,
    PositionOnlyPendulum,
    VelocityOnlyCartPole,
)
from rlgate.envs.popgym_games import Battleship, Concentration, MineSweeper, MultiarmedBandit
from rlgate.envs.tmaze import TMazeEnv

__all__ = [
    "ENVS",
    "POPGYM",
    "GymVectorEnv",
    "MatchEnv",
    "MemoryEnv",
    "TMazeEnv",
    "TensorEnv",
    "make_vec",
    "popgym_id",
]

#: POPGym's envs on tensors: popgym's name -> the clone (its ``DIFFICULTIES`` hold popgym's
#: parameters for Easy, Medium and Hard)
POPGYM = MappingProxyType(
    {
        "RepeatFirst": RepeatFirst,
        "RepeatPrevious": RepeatPrevious,
        "Autoencode": Autoencode,
        "CountRecall": CountRecall,
        "HigherLower": HigherLower,
        "MultiarmedBandit": MultiarmedBandit,
        "Concentration": Concentration,
        "Battleship": Battleship,
        "MineSweeper": MineSweeper,
        "PositionOnlyCartPole": PositionOnlyCartPole,
        "VelocityOnlyCartPole": VelocityOnlyCartPole,
        "NoisyPositionOnlyCartPole": NoisyPositionOnlyCartPole,
        "PositionOnlyPendulum": PositionOnlyPendulum,
        "NoisyPositionOnlyPendulum": NoisyPositionOnlyPendulum,
    }
)

#: where popgym's registered id spells a name otherwise than its class (and the clone) does
_POPGYM_SPELLING = {"VelocityOnlyCartPole": "VelocityOnlyCartpole"}


def popgym_id(name: str, level: str) -> str:
    """popgym's own gymnasium id of the env a ``POPGYM`` clone copies, at ``level``."""
    return f"popgym-{_POPGYM_SPELLING.get(name, name)}{level}-v0"


#: The tensor tasks: id -> (class, fixed options). Read-only.
ENVS: MappingProxyType[str, tuple[type[TensorEnv], dict[str, Any]]] = MappingProxyType(
    {
        "rlgate/PassiveMatch-v0": (MatchEnv, {"active": False}),
        "rlgate/ActiveMatch-v0": (MatchEnv, {"active": True}),
        "rlgate/TMaze-v0": (TMazeEnv, {}),
        **{f"rlgate/MemoryS{s}-v0": (MemoryEnv, {"size": s}) for s in SIZES},
        **{
            f"rlgate/popgym-{name}{level}-v0": (cls, dict(params))
            for name, cls in POPGYM.items()
            for level, params in cls.DIFFICULTIES.items()
        },
    }
)


def make_single(env_id: str, **options: Any) -> gym.Env:
    """The gymnasium entry point of the ``rlgate/`` ids: one copy, numpy observations."""
    from rlgate.envs.single import SingleEnv

    cls, fixed = ENVS[env_id]
    render_mode = options.pop("render_mode", None)  # gymnasium's, not the task's
    _check(cls, fixed, options)
    return SingleEnv(cls, render_mode=render_mode, **fixed, **options)


def _check(cls: type, fixed: dict[str, Any], options: dict[str, Any]) -> None:
    clash = sorted(set(fixed) & set(options))
    if clash:
        raise ValueError(f"option(s) {', '.join(clash)} are fixed by this env id")
    check_options(cls, options)


#: id prefix -> the package that registers those ids when imported, and how to install it
ID_PACKAGES = {
    "MiniGrid-": ("minigrid", "pip install minigrid"),
    "BabyAI-": ("minigrid", "pip install minigrid"),
    "popgym-": ("popgym", 'pip install -e ".[popgym]"'),
}


def resolve_id(env_id: str) -> str:
    """Import what registers ``env_id`` and return the id to look up.

    ``module:EnvId`` imports ``module`` first (gymnasium's form, how users register their own
    envs); ids of minigrid and popgym import those packages.

    Raises:
        ValueError: the module can't be imported, or the id is not registered.
    """
    import importlib

    if ":" in env_id:
        module, _, name = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"env {env_id!r}: cannot import module {module!r}: {err} (install it, or put "
                "its folder on PYTHONPATH: the rlgate command does not import from the current "
                "folder)"
            ) from None
        env_id = name
    for prefix, (package, install) in ID_PACKAGES.items():
        if env_id.startswith(prefix):
            try:
                importlib.import_module(package)
            except ImportError:
                raise ValueError(
                    f"env {env_id!r} needs the package {package!r}: {install}"
                ) from None
    if env_id not in ENVS and env_id not in gym.registry:
        raise ValueError(
            f"unknown env {env_id!r}; valid envs: {', '.join(ENVS)}, any registered gymnasium "
            "id (e.g. CartPole-v1, MiniGrid-MemoryS7-v0, popgym-RepeatPreviousEasy-v0), or "
            "module:EnvId"
        )
    return env_id


def make_vec(
    env_id,
    num_envs: int,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    autoreset: bool = True,
    **options: Any,
):
    """The batched env for ``env_id``: torch tensors in and out on ``device``.

    Args:
        env_id: a key of ``ENVS`` (tensor tasks, stepped on ``device``), any registered
            gymnasium id such as "MiniGrid-MemoryS7-v0" or "CartPole-v1", or "module:EnvId"
            (gymnasium vector env, converted to tensors); or, from Python, a function that
            returns a ``gymnasium.Env``, a ``gymnasium.vector.VectorEnv`` or a batched env
            (returned as it is).
        num_envs: number of copies N (>= 1).
        device: "cpu", "cuda", "cuda:1", ...
        seed: RNG seed; the same seed gives the same trajectories on CPU.
        autoreset: tensor tasks: start the next episode in the step that ends one (False:
            a copy stays at its episode's end until ``reset``, as for videos). Gymnasium
            envs always reset in the same step.
        **options: the task's options (e.g. ``delay`` for the Match tasks), or keyword
            arguments of ``gymnasium.make`` (``render_mode="rgb_array"`` to render them).

    Raises:
        ValueError: unknown id or option, invalid option value, num_envs or device, or a space
            rlgate can't encode or act in.
    """
    if not isinstance(env_id, str):
        if hasattr(env_id, "single_observation_space") and hasattr(env_id, "device"):
            return env_id  # already a batched env
        return GymVectorEnv(env_id, num_envs, device=device, seed=seed, **options)
    env_id = resolve_id(env_id)
    if env_id in ENVS:
        cls, fixed = ENVS[env_id]
        # gymnasium's render modes: a tensor task always draws itself (its ``render``)
        mode = options.pop("render_mode", None)
        if mode not in (None, *cls.render_modes):
            raise ValueError(f"render_mode {mode!r}; valid: None, {', '.join(cls.render_modes)}")
        _check(cls, fixed, options)
        return cls(
            num_envs=num_envs, device=device, seed=seed, autoreset=autoreset, **fixed, **options
        )
    return GymVectorEnv(env_id, num_envs, device=device, seed=seed, **options)


for _env_id in ENVS:
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point="rlgate.envs:make_single", kwargs={"env_id": _env_id})
