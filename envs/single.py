"""One copy of a tensor task as a standard ``gymnasium.Env`` with numpy observations.

This is what ``gymnasium.make("rlgate/...")`` returns: no auto-reset (the terminal observation
is returned, as gymnasium expects), CPU tensors underneath, seeded through ``reset(seed=...)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from rlgate.envs.base import TensorEnv


class SingleEnv(gym.Env):
    """A ``gymnasium.Env`` view of ``env_cls(num_envs=1, ...)``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, env_cls: type[TensorEnv], **options: Any):
        self._env = env_cls(num_envs=1, device="cpu", seed=0, autoreset=False, **options)
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space

    def _numpy(self, obs: dict[str, torch.Tensor]) -> dict[str, Any]:
        out = {}
        for key, space in self.observation_space.spaces.items():
            value = obs[key][0].cpu().numpy()
            out[key] = (
                value.astype(space.dtype)
                if isinstance(space, gym.spaces.Box)
                else (np.int64(value))
            )
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self._env.reset(seed=int(self.np_random.integers(2**62)))
        return self._numpy(obs), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(torch.tensor([int(action)]))
        out: dict[str, Any] = {}
        if bool(info["done"][0]):
            out["episode"] = {k: v[0].item() for k, v in info["episode"].items()}
        return (self._numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out)
