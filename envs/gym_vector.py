"""Any gymnasium environment (minigrid's included) behind rlgate's batched tensor API.

Runs gymnasium's own vector env (``SyncVectorEnv`` or ``AsyncVectorEnv``) in same-step
autoreset mode and converts to torch tensors on ``device``. Dict observations keep their array
entries (minigrid's "image" and "direction"; the constant "mission" string is dropped).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from rlgate.envs.base import check_actions, resolve_device

VECTORIZATION = ("sync", "async")


def _array_keys(space: gym.Space) -> list[str] | None:
    if not isinstance(space, gym.spaces.Dict):
        return None
    arrays = (gym.spaces.Box, gym.spaces.Discrete)
    return [k for k, s in space.spaces.items() if isinstance(s, arrays)]


class GymVectorEnv:
    """Batched tensor API over ``gymnasium.vector`` for a registered gymnasium id.

    Args:
        env_id: a gymnasium id, e.g. "MiniGrid-MemoryS7-v0".
        num_envs: N copies; device: where tensors go; seed: seeds copy b with seed + b.
        vectorization: "sync" (one process) or "async" (one subprocess per copy).
        **kwargs: passed to ``gymnasium.make``.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        vectorization: str = "sync",
        **kwargs: Any,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if vectorization not in VECTORIZATION:
            raise ValueError(f"vectorization must be one of {VECTORIZATION}, got {vectorization!r}")
        self.device = resolve_device(device)
        self.num_envs, self.seed = num_envs, seed
        probe = gym.make(env_id, **kwargs)
        keys = _array_keys(probe.observation_space)
        probe.close()

        def make():
            env = gym.make(env_id, **kwargs)
            return gym.wrappers.FilterObservation(env, keys) if keys is not None else env

        cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
        self.env = cls([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self._return = np.zeros(num_envs)
        self._length = np.zeros(num_envs, dtype=np.int64)

    @property
    def num_actions(self) -> int:
        return int(self.single_action_space.n)

    def _tensors(self, obs) -> dict[str, Tensor]:
        if not isinstance(obs, dict):
            obs = {"obs": obs}
        return {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in obs.items()}

    def reset(self, seed: int | None = None):
        seed = self.seed if seed is None else seed
        obs, _ = self.env.reset(seed=seed)
        self._return[:] = 0
        self._length[:] = 0
        first = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return self._tensors(obs), {"is_first": first}

    def step(self, actions):
        a = check_actions(actions, self.num_envs, self.num_actions, "cpu").numpy()
        obs, reward, terminated, truncated, _ = self.env.step(a)
        self._return += reward
        self._length += 1
        done = terminated | truncated
        dev = self.device
        episode = {
            "return": torch.as_tensor(self._return.copy(), dtype=torch.float32, device=dev),
            "length": torch.as_tensor(self._length.copy(), device=dev),
            "success": torch.as_tensor(terminated & (reward > 0), dtype=torch.float32, device=dev),
        }
        self._return[done] = 0
        self._length[done] = 0
        done_t = torch.as_tensor(done, device=dev)
        info = {"done": done_t, "is_first": done_t, "episode": episode}
        return (
            self._tensors(obs),
            torch.as_tensor(reward, dtype=torch.float32, device=dev),
            torch.as_tensor(terminated, device=dev),
            torch.as_tensor(truncated, device=dev),
            info,
        )

    def close(self) -> None:
        self.env.close()
