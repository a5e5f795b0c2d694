"""One copy of a tensor task as a standard ``gymnasium.Env`` with numpy observations.

This is what ``gymnasium.make("rlgate/...")`` returns: no auto-reset (the terminal observation
is returned, as gymnasium expects), CPU tensors underneath, seeded through ``reset(seed=...)``,
``render_mode="rgb_array"`` for the task's picture. At an episode's end ``info["episode"]``
holds its statistics (return, length, success and the task's extras that apply to it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from rlgate.envs.base import TensorEnv
from rlgate.envs.spaces import unflatten_obs


class SingleEnv(gym.Env):
    """A ``gymnasium.Env`` view of ``env_cls(num_envs=1, ...)``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, env_cls: type[TensorEnv], render_mode: str | None = None, **options: Any):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"render_mode {render_mode!r} is not supported; valid: None, "
                + ", ".join(repr(m) for m in self.metadata["render_modes"])
            )
        self.render_mode = render_mode
        self._env = env_cls(num_envs=1, device="cpu", seed=0, autoreset=False, **options)
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space

    def render(self):
        """rgb_array: the task's picture ([H, W, 3] uint8); None without a render mode."""
        return self._env.render(0) if self.render_mode == "rgb_array" else None

    def _numpy(self, obs: dict[str, torch.Tensor]) -> Any:
        flat = {key: value[0].cpu().numpy() for key, value in obs.items()}
        return unflatten_obs(flat, self.observation_space)

    def _action(self, action) -> torch.Tensor:
        """One action of the action space as the batched env's [1, *shape] tensor."""
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return torch.tensor([int(action)])
        if isinstance(space, gym.spaces.Box):
            return torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, *space.shape)
        return torch.as_tensor(np.asarray(action, dtype=np.int64)).reshape(1, *space.shape)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self._env.reset(seed=int(self.np_random.integers(2**62)))
        return self._numpy(obs), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(self._action(action))
        out: dict[str, Any] = {}
        if bool(info["done"][0]):
            # a statistic that does not apply to this episode (NaN in the batched env: the
            # Match tasks' success_at_{p} of the other positions) is left out, so that equal
            # episodes have equal infos
            episode = {k: v[0].item() for k, v in info["episode"].items()}
            out["episode"] = {k: v for k, v in episode.items() if v == v}
        return (self._numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out)
