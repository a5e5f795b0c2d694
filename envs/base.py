"""The batched environment interface: N copies of a task stepped together as torch tensors.

Every batched env (tensor tasks and the gymnasium-vector adapter) offers:

- ``reset(seed=None) -> (obs, info)``
- ``step(actions [N]) -> (obs, reward [N], terminated [N], truncated [N], info)``

Observations are dicts of tensors with a leading [N] axis on ``device``. Episodes auto-reset in
the same step: when copy b ends at a step, the returned obs[b] is the first observation of its
next episode and ``info["is_first"][b]`` is True (the reset signal of rlgate's cores).
``info["done"]`` marks the copies whose episode ended, and ``info["episode"]`` holds that
episode's statistics ("return", "length", "success", and task extras), valid where done
(an empty dict on steps where no episode ended; "success" is NaN for an env that does not
say what success is). On a step where a time limit truncated some episode,
``info["final_obs"]`` holds the last observation of each truncated episode, before the
reset (valid where truncated): the agent bootstraps its value from it.

Observations are flat dicts, one entry per leaf of ``single_observation_space``
(``rlgate.envs.spaces``). ``observation_kinds`` ({entry: kind}) declares what an entry is
where its space alone does not say it (the grid tasks' "image" is a one-hot "grid" view),
so that the agent picks the right encoder.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import native


def resolve_device(device: torch.device | str) -> torch.device:
    """A torch device that exists here, or ValueError naming the problem."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} does not exist here: CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPUs")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: rlgate envs run on cpu or cuda")
    return dev


def _fits(value: Any, hint: Any) -> bool:
    """Whether an option's value has its annotated type (bool is not a number here; an int is
    a float)."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def pick_device(name: str) -> torch.device:
    """A device name as the CLI takes it ("auto": cuda where available, else cpu) -> a torch
    device that exists here (ValueError naming the problem otherwise)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def check_options(cls: type, options: dict[str, Any]) -> None:
    """ValueError for keyword options that ``cls.__init__`` does not take, or whose value does
    not have the parameter's annotated type (``length=abc`` for an int, say)."""
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n in params if n not in ("self", "num_envs", "device", "seed", "autoreset")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid options: {', '.join(valid) or 'none'}"
        )
    hints = typing.get_type_hints(cls.__init__)
    for name, value in options.items():
        hint = hints.get(name, Any)
        if not _fits(value, hint):
            raise ValueError(f"env option {name} takes {_type_name(hint)}, got {value!r}")


def check_actions(actions, num_envs: int, num_actions: int, device) -> Tensor:
    """Validate a batch of discrete actions: an integer tensor [num_envs] in 0..num_actions-1.

    Out-of-range actions are rejected, not clamped. Returns them as long on ``device``.
    """
    a = torch.as_tensor(actions, device=device)
    if a.shape != (num_envs,) or a.dtype.is_floating_point or a.dtype == torch.bool:
        raise ValueError(
            f"actions must be an integer tensor of shape [{num_envs}], got "
            f"{a.dtype} {tuple(a.shape)}"
        )
    a = a.long()
    low, high = torch.aminmax(a)  # one pass (and one sync) for both bounds
    if int(low) < 0 or int(high) >= num_actions:
        raise ValueError(f"actions out of range: valid actions are 0..{num_actions - 1}")
    return a


def _plain_long(actions: Any, num_envs: int, space: gym.Space) -> bool:
    """Whether ``actions`` already is what a native step takes: a contiguous CPU int64 tensor
    [num_envs, *space.shape] (its ranges are the kernel's to check)."""
    return (
        isinstance(actions, Tensor)
        and actions.dtype == torch.long
        and actions.is_cpu
        and actions.shape == (num_envs, *space.shape)
        and actions.is_contiguous()
    )


_EQUAL_RANGES: dict[int, tuple[gym.spaces.MultiDiscrete, tuple[int, int] | None]] = {}


def _equal_ranges(space: gym.spaces.MultiDiscrete) -> tuple[int, int] | None:
    """(low, high) where every entry of ``space`` takes low..high-1, else None (read once per
    space: every step asks)."""
    seen = _EQUAL_RANGES.get(id(space))
    if seen is not None and seen[0] is space:
        return seen[1]
    start, nvec = np.asarray(space.start).reshape(-1), np.asarray(space.nvec).reshape(-1)
    equal = (start == start[0]).all() and (nvec == nvec[0]).all()
    bounds = (int(start[0]), int(start[0] + nvec[0])) if equal else None
    _EQUAL_RANGES[id(space)] = (space, bounds)
    return bounds


def check_space_actions(actions, num_envs: int, space: gym.Space, device) -> Tensor:
    """Validate a batch of actions of ``space``: Discrete as ``check_actions``; MultiDiscrete
    an integer tensor [num_envs, *nvec.shape] with every entry in its range; Box a float tensor
    [num_envs, *shape], finite (the env clips it to its bounds, as gymnasium's envs do).
    Returns them on ``device`` (long, or float32 for a Box)."""
    if isinstance(space, gym.spaces.Discrete):
        a = check_actions(actions, num_envs, int(space.n), device)
        return a + int(space.start) if space.start else a
    a = torch.as_tensor(actions, device=device)
    shape = (num_envs, *space.shape)
    if isinstance(space, gym.spaces.MultiDiscrete):
        if a.shape != shape or a.dtype.is_floating_point or a.dtype == torch.bool:
            raise ValueError(
                f"actions must be an integer tensor of shape {list(shape)}, got "
                f"{a.dtype} {tuple(a.shape)}"
            )
        a = a.long()
        equal = _equal_ranges(space)
        if equal is not None:
            low, high = torch.aminmax(a)  # equal ranges (a board's rows and columns): one pass
            bad = int(low) < equal[0] or int(high) >= equal[1]
        else:
            lo = torch.as_tensor(np.asarray(space.start), device=device)
            hi = lo + torch.as_tensor(np.asarray(space.nvec), device=device)
            bad = bool(((a < lo) | (a >= hi)).any())
        if bad:
            raise ValueError(f"actions out of range: valid actions are {space}")
        return a
    if isinstance(space, gym.spaces.Box):
        if a.shape != shape or not a.dtype.is_floating_point:
            raise ValueError(
                f"actions must be a float tensor of shape {list(shape)}, got "
                f"{a.dtype} {tuple(a.shape)}"
            )
        a = a.float()
        if not bool(torch.isfinite(a).all()):
            raise ValueError("actions must be finite")
        return a
    raise ValueError(f"unsupported action space {space}")


#: draws a pool holds beyond what eight steps of every copy could take
POOL_SIZE = 4096


class TensorEnv:
    """Base class of the tensor tasks. All state is a dict of tensors with a leading [N] axis.

    Subclasses set ``single_observation_space``, ``single_action_space`` (Discrete,
    MultiDiscrete or Box; ``step`` checks actions against it) and ``stat_keys`` (extra
    per-episode statistics) and implement:

    - ``_reset(mask [N] bool)``: start new episodes in the masked copies (also set the
      statistics of ``stat_keys`` in ``self.state`` to zero there);
    - ``_step(actions [N]) -> (reward [N] float, terminated [N] bool, truncated [N] bool)``;
    - ``_observe() -> dict of [N, ...] tensors``.
    """

    single_observation_space: gym.Space
    single_action_space: gym.Space
    stat_keys: tuple[str, ...] = ()
    #: gymnasium's render modes: every tensor task draws itself (``render``)
    render_modes: tuple[str, ...] = ("rgb_array",)
    #: entry -> encoder kind, for entries whose space does not say what they are
    observation_kinds: dict[str, str] = {}  # noqa: RUF012 (read-only by convention)
    #: whether the env steps with envs/native.c's kernels (POPGym's, Match and MemoryS on CPU)
    native: bool = False
    #: whether its native ``_step`` checks the actions' ranges (then ``step`` does not)
    native_checks_actions: bool = False
    #: the env's pools of random draws (name -> the most draws a step takes per copy; see
    #: ``_pool``): "uniform" holds float64 uniforms, any other float32 draws the env makes
    pools: dict[str, int] = {}  # noqa: RUF012 (read-only by convention)

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        autoreset: bool = True,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.autoreset = autoreset
        self.generator = torch.Generator(device=self.device)
        self._seed(seed)
        self.state: dict[str, Tensor] = {}
        self._scratch: Tensor | None = None
        for name, per_copy in self.pools.items():  # emptied: drawn at their first use
            size = POOL_SIZE + 8 * per_copy * num_envs
            dtype = torch.float64 if name == "uniform" else torch.float32
            self.state[name] = torch.zeros(size, dtype=dtype, device=self.device)
            self.state[name + "_at"] = torch.full((1,), size, dtype=torch.long, device=self.device)

    # ----------------------------------------------------------------- public API
    def reset(self, seed: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Start a new episode in every copy; ``seed`` reseeds the env's generator."""
        if seed is not None:
            self._seed(seed)
        for name in self.pools:  # drawn again from the generator as it is now
            self.state[name + "_at"].fill_(self.state[name].numel())
        self._fill_pools()
        n = self.num_envs
        self.state["episode_return"] = torch.zeros(n, device=self.device)
        self.state["episode_length"] = torch.zeros(n, dtype=torch.long, device=self.device)
        self._reset(torch.ones(n, dtype=torch.bool, device=self.device))
        first = torch.ones(n, dtype=torch.bool, device=self.device)
        return self._observe(), {"is_first": first}

    def step(self, actions: Tensor):
        """Step every copy with ``actions`` ([N, *action shape], in the action space)."""
        space, n = self.single_action_space, self.num_envs
        self._fill_pools()
        if self.native and self.native_checks_actions and _plain_long(actions, n, space):
            try:  # the native step checks every action's range itself
                reward, terminated, truncated = self._step(actions)
            except ValueError:
                check_space_actions(actions, self.num_envs, space, self.device)  # which action
                raise
        else:
            actions = check_space_actions(actions, self.num_envs, space, self.device)
            reward, terminated, truncated = self._step(actions)
        if self.native:  # the same in one call (the native envs)
            done, ended = native.step_bookkeeping(self, reward, terminated, truncated)
            return self._end_step(reward, terminated, truncated, done, ended > 0)
        st = self.state
        st["episode_return"] += reward
        st["episode_length"] += 1
        done = terminated | truncated
        return self._end_step(reward, terminated, truncated, done, bool(done.any()))

    def _whole_step(self, actions, run, as_obs) -> tuple:
        """``step`` where one native call ``run(actions) -> native.Stepped`` steps every copy,
        keeps its episode's books, resets the copies whose episode ended (where autoreset) and
        makes the observations; ``as_obs`` turns its observation tensor into ``_observe``'s
        dict. The statistics beyond return and length (success, ``stat_keys``) are read after
        the reset: these envs keep them constant."""
        space, n = self.single_action_space, self.num_envs
        self._fill_pools()
        if _plain_long(actions, n, space):
            try:  # the kernel checks every action's range itself
                out = run(actions)
            except ValueError:
                check_space_actions(actions, n, space, self.device)  # which action
                raise
        else:
            out = run(check_space_actions(actions, n, space, self.device).contiguous())
        info: dict[str, Any] = {"done": out.done, "episode": {}}
        if out.ended:
            st = self.state
            info["episode"] = {
                "return": out.returns,
                "length": out.lengths,
                **{key: st[key].clone() for key in ("success", *self.stat_keys)},
            }
            if self.autoreset and out.final_obs is not None:
                info["final_obs"] = as_obs(out.final_obs)
        if self.autoreset:
            info["is_first"] = out.done
        return as_obs(out.obs), out.reward, out.terminated, out.truncated, info

    def scratch(self, make) -> Tensor:
        """The env's scratch tensor, made by ``make()`` on first use: where a native step
        writes what it hands out only sometimes (and then as a copy)."""
        if self._scratch is None:
            self._scratch = make()
        return self._scratch

    def _end_step(self, reward, terminated, truncated, done, any_done: bool, obs=None):
        """The rest of ``step`` once the copies have stepped and their episode returns and
        lengths have grown: the statistics of the episodes that ended, their auto-reset and
        the observations (``obs``, where given, are the copies' next ones, valid where no
        episode ended)."""
        st = self.state
        info: dict[str, Any] = {"done": done, "episode": {}}
        cut = None  # how many ended episodes were truncated, where the native call counted
        if any_done:  # statistics only when some episode ended (the common step pays nothing)
            if self.autoreset and self.native:  # copied out and zeroed in one call
                ret, length, cut = native.episode_ends(self, done, truncated)
            else:
                ret, length = st["episode_return"].clone(), st["episode_length"].clone()
            keys = ("success", *self.stat_keys)
            info["episode"] = {
                "return": ret,
                "length": length,
                **{key: st[key].clone() for key in keys},
            }
        if self.autoreset:
            if any_done:
                any_cut = cut > 0 if cut is not None else bool(truncated.any())
                if any_cut:  # the last observation, before the reset
                    info["final_obs"] = self._observe()
                if cut is None:
                    st["episode_return"].masked_fill_(done, 0.0)
                    st["episode_length"].masked_fill_(done, 0)
                self._reset(done)
            info["is_first"] = done
        if obs is None or any_done:
            obs = self._observe()
        return obs, reward, terminated, truncated, info

    @property
    def num_actions(self) -> int:
        return int(self.single_action_space.n)

    def get_state(self, index: int) -> dict[str, Tensor]:
        """Copy of the state of copy ``index`` (leading axis of size 1; the pools of draws,
        which no copy owns, left out)."""
        shared = self._pool_keys()
        return {k: v[index : index + 1].clone() for k, v in self.state.items() if k not in shared}

    def _pool_keys(self) -> set[str]:
        return {key for name in self.pools for key in (name, name + "_at")}

    def set_state(self, index: int, state: dict[str, Tensor]) -> None:
        """Overwrite the state of copy ``index`` with one from ``get_state``."""
        shared = self._pool_keys()
        if shared & set(state):
            raise ValueError(
                f"a copy's state holds no pools of draws ({', '.join(sorted(shared))})"
            )
        for k, v in state.items():
            self.state[k][index : index + 1] = v.to(self.device)

    def render(self, index: int = 0) -> np.ndarray:
        """A top-down picture of copy ``index``: [H, W, 3] uint8 (the world, the agent's view
        lightened, the agent)."""
        if not 0 <= index < self.num_envs:
            raise ValueError(f"index must be in 0..{self.num_envs - 1}, got {index}")
        return self._render(index)

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes as the copies step (their state tensors and the generator),
        for a checkpoint: ``load_state_dict`` of it continues exactly where this env was."""
        return {
            "state": {k: v.detach().cpu().clone() for k, v in self.state.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of an env of the same task, options and num_envs."""
        state = data["state"]
        if set(state) != set(self.state) or any(
            state[k].shape != v.shape for k, v in self.state.items()
        ):
            raise ValueError("the saved env state does not fit this env (task, options, num_envs)")
        self.state = {k: v.to(self.device, dtype=self.state[k].dtype) for k, v in state.items()}
        self.generator.set_state(data["generator"])

    # ----------------------------------------------------------------- helpers
    def _seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator.manual_seed(int(seed))

    def _pool(self, name: str, need: int) -> tuple[Tensor, Tensor]:
        """Pool ``name`` of ``pools`` with at least ``need`` draws left (drawn again, whole, from
        the generator when short) and its position [1] int64, the index of its next draw.

        A step takes the draws it needs (a new episode's deal, its initial state, an
        observation's noise) from the pool in copy order, so that the native path and the
        PyTorch path, handed the same state, draw the same numbers; drawing a pool at a time
        is one generator call for many steps' worth. Pools are refilled only where a step or
        a reset starts (``_fill_pools``), never halfway through one: both paths refill alike."""
        pool, at = self.state[name], self.state[name + "_at"]
        if int(at) + need > pool.numel():
            if need > pool.numel():
                raise ValueError(f"pool {name!r} holds {pool.numel()} draws, a step needs {need}")
            self._fill_pool(name, pool)
            at.zero_()
        return pool, at

    def _fill_pools(self) -> None:
        """Every pool with what a step (or a reset) of every copy could take left in it."""
        for name, per_copy in self.pools.items():
            self._pool(name, per_copy * self.num_envs)

    def _take(self, name: str, count: int) -> Tensor:
        """The next ``count`` draws of pool ``name`` ([count]; ``_fill_pools`` has left them)."""
        pool, at = self.state[name], self.state[name + "_at"]
        start = int(at)
        if start + count > pool.numel():
            raise RuntimeError(
                f"pool {name!r} ran short: {count} draws from {start} of {pool.numel()}"
            )
        at += count
        return pool[start : start + count]

    def _fill_pool(self, name: str, pool: Tensor) -> None:
        """Fill ``pool`` in place with fresh draws of pool ``name``: "uniform" holds float64
        uniforms in [0, 1); any other pool (float32) is the env's to fill."""
        if name != "uniform":  # pragma: no cover - an env's own pool
            raise NotImplementedError(f"{type(self).__name__} does not fill pool {name!r}")
        pool.uniform_(generator=self.generator)

    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    def _randint(self, low: int, high: int, shape: tuple[int, ...]) -> Tensor:
        return torch.randint(low, high, shape, generator=self.generator, device=self.device)

    # ----------------------------------------------------------------- for subclasses
    def _reset(self, mask: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, actions: Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _render(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
