"""Any gymnasium environment (minigrid's and popgym's included) behind rlgate's batched API.

Runs gymnasium's own vector env (``SyncVectorEnv`` or ``AsyncVectorEnv``) in same-step
autoreset mode and converts to torch tensors on ``device``. Observations become flat dicts of
tensors (``rlgate.envs.spaces``); a Dict's text entries (minigrid's "mission") are removed.
An episode's success is what the env reports in its last step's info (``info["success"]`` or
``info["is_success"]``, the gymnasium-robotics convention); minigrid's envs, which report
none, succeed when they terminate with a positive reward; otherwise success is NaN (not
logged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from rlgate.envs import minigrid_tasks
from rlgate.envs.base import resolve_device
from rlgate.envs.spaces import check_action_space, flatten_obs, flatten_space, text_keys

VECTORIZATION = ("sync", "async")
SUCCESS_KEYS = ("success", "is_success")


def without_text(env: gym.Env) -> gym.Env:
    """``env`` without the observation keys that hold strings (minigrid's mission): no encoder
    reads them, and gymnasium's AsyncVectorEnv cannot share them between processes."""
    keys = text_keys(env.observation_space)
    if not keys:
        return env
    kept = [k for k in env.observation_space.spaces if k not in keys]
    return gym.wrappers.FilterObservation(env, kept)


class GymVectorEnv:
    """Batched tensor API over ``gymnasium.vector``.

    Args:
        env: a gymnasium id (e.g. "MiniGrid-MemoryS7-v0"), a function that returns a
            ``gymnasium.Env``, or a ``gymnasium.vector.VectorEnv`` made with
            ``autoreset_mode=AutoresetMode.SAME_STEP``.
        num_envs: N copies (ignored for a VectorEnv, which has its own).
        device: where tensors go; seed: seeds copy b with seed + b.
        vectorization: "sync" (one process) or "async" (one subprocess per copy).
        **kwargs: passed to ``gymnasium.make`` (an id only).

    Raises:
        ValueError: invalid arguments; UnsupportedSpace (a ValueError) for a space rlgate has
            no encoder or distribution for.
    """

    def __init__(
        self,
        env: str | Callable[[], gym.Env] | gym.vector.VectorEnv,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        vectorization: str = "sync",
        **kwargs: Any,
    ):
        if vectorization not in VECTORIZATION:
            raise ValueError(f"vectorization must be one of {VECTORIZATION}, got {vectorization!r}")
        self.device = resolve_device(device)
        self.seed = seed
        if isinstance(env, gym.vector.VectorEnv):
            mode = env.metadata.get("autoreset_mode")
            if mode != AutoresetMode.SAME_STEP:
                raise ValueError(
                    "a vector env must reset in the same step: make it with "
                    f"autoreset_mode=AutoresetMode.SAME_STEP (it has {mode})"
                )
            self.env = env
            self.num_envs = env.num_envs
            # a sync vector env's copies can be asked what they are; an async one's cannot
            probe = env.envs[0] if isinstance(env, gym.vector.SyncVectorEnv) else None
            self.observation_kinds = minigrid_tasks.observation_kinds(probe) if probe else {}
            self._minigrid = probe is not None and minigrid_tasks.is_minigrid(probe)
            self.max_episode_steps = None
        else:
            if not isinstance(num_envs, int) or num_envs < 1:
                raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
            self.num_envs = num_envs
            if isinstance(env, str):
                env_id = env

                def make():
                    return without_text(gym.make(env_id, **kwargs))
            else:
                if kwargs:
                    raise ValueError("env options go to gymnasium.make: pass an id, not a function")
                factory = env

                def make():
                    return without_text(factory())

            try:
                probe = make()
            except (TypeError, ImportError, gym.error.Error) as err:
                # an option the env does not take, a missing dependency of the env
                raise ValueError(f"cannot make env {env!r}: {err}") from None
            self.observation_kinds = minigrid_tasks.observation_kinds(probe)
            self._minigrid = minigrid_tasks.is_minigrid(probe)
            spec = probe.spec
            self.max_episode_steps = spec.max_episode_steps if spec is not None else None
            probe.close()
            cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
            self.env = cls([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = check_action_space(self.env.single_action_space)
        flatten_space(self.single_observation_space)  # refuse what no encoder reads, now
        self._return = np.zeros(self.num_envs)
        self._length = np.zeros(self.num_envs, dtype=np.int64)

    @property
    def num_actions(self) -> int:
        """Discrete action spaces: the number of actions."""
        return int(self.single_action_space.n)

    def _tensors(self, obs) -> dict[str, Tensor]:
        flat = flatten_obs(obs, self.single_observation_space)
        return {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in flat.items()}

    def reset(self, seed: int | None = None):
        seed = self.seed if seed is None else seed
        obs, _ = self.env.reset(seed=seed)
        self._return[:] = 0
        self._length[:] = 0
        first = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return self._tensors(obs), {"is_first": first}

    def _actions(self, actions) -> np.ndarray:
        """Validate a batch of actions [N, *shape] of the action space -> numpy."""
        space, n = self.single_action_space, self.num_envs
        a = torch.as_tensor(actions).detach().cpu()
        shape = (n, *space.shape)
        if tuple(a.shape) != shape:
            raise ValueError(f"actions must have shape {list(shape)}, got {tuple(a.shape)}")
        if isinstance(space, gym.spaces.Box):
            if not bool(torch.isfinite(a).all()):
                raise ValueError("actions must be finite")
            return a.numpy().astype(space.dtype)
        if a.dtype.is_floating_point and isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"actions must be an integer tensor of shape {list(shape)}")
        arr = a.numpy()
        if isinstance(space, gym.spaces.Discrete):
            low, high = int(space.start), int(space.start + space.n - 1)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            low, high = space.start, space.start + space.nvec - 1
        else:  # MultiBinary
            low, high = 0, 1
        if np.any(arr < low) or np.any(arr > high) or np.any(arr != np.round(arr)):
            raise ValueError(f"actions out of range: valid actions are {low}..{high}")
        return arr.astype(space.dtype if space.dtype is not None else np.int64)

    def _success(self, terminated, reward, done, info) -> np.ndarray:
        final = info.get("final_info", {})
        for key in SUCCESS_KEYS:
            if key in final:
                mask = final.get(f"_{key}", np.ones(self.num_envs, dtype=bool))
                return np.where(mask, np.asarray(final[key], dtype=np.float32), np.nan)
        if self._minigrid:
            return minigrid_tasks.success(terminated, reward).astype(np.float32)
        return np.full(self.num_envs, np.nan, dtype=np.float32)

    def _final_obs(self, obs, truncated: np.ndarray, info) -> dict[str, Tensor]:
        """The observations with each truncated copy's last one (before its reset) in place."""
        space = self.single_observation_space
        flat = {k: np.array(v, copy=True) for k, v in flatten_obs(obs, space).items()}
        for b in np.flatnonzero(truncated):
            for k, v in flatten_obs(info["final_obs"][b], space).items():
                flat[k][b] = v
        return {k: torch.as_tensor(v, device=self.device) for k, v in flat.items()}

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(self._actions(actions))
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        reward = np.asarray(reward, dtype=np.float64)
        self._return += reward
        self._length += 1
        done = terminated | truncated
        dev = self.device
        out_info: dict[str, Any] = {"episode": {}}
        if done.any():
            out_info["episode"] = {
                "return": torch.as_tensor(self._return.copy(), dtype=torch.float32, device=dev),
                "length": torch.as_tensor(self._length.copy(), device=dev),
                "success": torch.as_tensor(
                    self._success(terminated, reward, done, info), device=dev
                ),
            }
        if truncated.any():
            out_info["final_obs"] = self._final_obs(obs, truncated, info)
        self._return[done] = 0
        self._length[done] = 0
        done_t = torch.as_tensor(done, device=dev)
        out_info["done"], out_info["is_first"] = done_t, done_t
        return (
            self._tensors(obs),
            torch.as_tensor(reward, dtype=torch.float32, device=dev),
            torch.as_tensor(terminated, device=dev),
            torch.as_tensor(truncated, device=dev),
            out_info,
        )

    def render(self, index: int = 0) -> np.ndarray:
        """Copy ``index``'s picture, [H, W, 3] uint8: a sync vector env of an env made with
        ``render_mode="rgb_array"``. (After a step that ended its episode, copy ``index``
        already shows the next episode: gymnasium resets in the same step.)"""
        if not isinstance(self.env, gym.vector.SyncVectorEnv):
            raise ValueError("rendering needs a sync vector env (its copies live here)")
        if not 0 <= index < self.num_envs:
            raise ValueError(f"index must be in 0..{self.num_envs - 1}, got {index}")
        frame = self.env.envs[index].render()
        if frame is None or np.ndim(frame) != 3:
            raise ValueError(
                "this env renders no rgb_array picture: make it with render_mode='rgb_array'"
            )
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self.env.close()
