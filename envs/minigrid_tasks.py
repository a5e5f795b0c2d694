"""What rlgate knows of minigrid's envs, for the gymnasium-vector adapter.

- Their "image" is a code image (object, colour, state per cell), not pixels: it is
  declared as the "minigrid" observation kind, unless a wrapper turned it into pixels
  (minigrid's RGB wrappers multiply the view by a tile size) or a shape of its own.
- minigrid reports no success: an episode succeeds when it terminates with a positive
  reward (reaching the goal; minigrid's own reward rule).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def is_minigrid(env: gym.Env) -> bool:
    try:
        from minigrid.minigrid_env import MiniGridEnv
    except ImportError:  # minigrid is a dependency, but a broken install must not stop others
        return False
    return isinstance(env.unwrapped, MiniGridEnv)


def observation_kinds(env: gym.Env) -> dict[str, str]:
    """{"image": "minigrid"} for a minigrid env whose image holds minigrid's codes."""
    if not is_minigrid(env):
        return {}
    space = env.observation_space
    if not isinstance(space, gym.spaces.Dict) or "image" not in space.spaces:
        return {}
    image, base = space["image"], env.unwrapped
    views = {(base.agent_view_size, base.agent_view_size, 3), (base.width, base.height, 3)}
    if isinstance(image, gym.spaces.Box) and tuple(image.shape) in views:
        return {"image": "minigrid"}
    return {}


def success(terminated: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """minigrid's success at an episode's end: terminated with a positive reward."""
    return terminated & (reward > 0)
