"""Observation and action spaces as rlgate's batched envs hand them to the agent.

An observation is a flat dict of tensors with a leading [N] axis, one entry per leaf of the
env's single observation space (``flatten_space``): a Dict's entries under their keys, a
Tuple's under "0", "1", ..., nested ones joined with "." ("0.image"), and a space that is no
container under "obs". Leaves are Box, Discrete, MultiDiscrete and MultiBinary; a Dict's text
entries (minigrid's "mission") are left out with a WARNING, and any other space (Text, Graph,
Sequence, OneOf) is refused with ``UnsupportedSpace``.

Batched envs take actions as the space holds them ([N, *shape]); the agent's distributions
(``rlgate.agents.distributions``) turn their samples into those.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)

#: the leaves an encoder exists for, and the containers around them
LEAF_SPACES = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
)
ACTION_SPACES = LEAF_SPACES
SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, and Dict or Tuple of these (nested too)"


class UnsupportedSpace(ValueError):
    """A space rlgate has no encoder or distribution for (the message names the valid ones)."""


def flatten_space(space: gym.Space, prefix: str = "") -> dict[str, gym.Space]:
    """The leaves of an observation space: {path: Box | Discrete | MultiDiscrete | MultiBinary}.

    Raises:
        UnsupportedSpace: a space with no encoder (Text, Graph, Sequence, ...), or a Dict or
            Tuple with no supported entry.
    """
    if isinstance(space, LEAF_SPACES):
        return {prefix or "obs": space}
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        items = space.spaces.items() if isinstance(space, gym.spaces.Dict) else enumerate(space)
        leaves: dict[str, gym.Space] = {}
        for key, sub in items:
            path = f"{prefix}.{key}" if prefix else str(key)
            if is_text(sub) and isinstance(space, gym.spaces.Dict):
                _warn_text(path, sub)
                continue
            leaves.update(flatten_space(sub, path))
        if not leaves:
            raise UnsupportedSpace(f"observation space {space} has no entry rlgate can encode")
        return leaves
    raise UnsupportedSpace(f"unsupported observation space {space}; rlgate encodes {SUPPORTED}")


def flatten_obs(obs: Any, space: gym.Space, prefix: str = "") -> dict[str, Any]:
    """A (batched or single) observation of ``space`` as {path: array}, the paths of
    ``flatten_space``."""
    if isinstance(space, LEAF_SPACES):
        return {prefix or "obs": obs}
    out: dict[str, Any] = {}
    items = space.spaces.items() if isinstance(space, gym.spaces.Dict) else enumerate(space)
    for key, sub in items:
        if is_text(sub) and isinstance(space, gym.spaces.Dict):
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten_obs(obs[key], sub, path))
    return out


def unflatten_obs(flat: dict[str, Any], space: gym.Space, prefix: str = "") -> Any:
    """The inverse of ``flatten_obs`` for one observation of numpy leaves: the value ``space``
    holds (a Dict's dict, a Tuple's tuple; a Discrete leaf as an int64 scalar, other leaves as
    arrays of the space's dtype)."""
    if isinstance(space, LEAF_SPACES):
        value = np.asarray(flat[prefix or "obs"])
        if isinstance(space, gym.spaces.Discrete):
            return np.int64(value)
        return value.astype(space.dtype).reshape(space.shape)
    items = space.spaces.items() if isinstance(space, gym.spaces.Dict) else enumerate(space)
    out = {
        key: unflatten_obs(flat, sub, f"{prefix}.{key}" if prefix else str(key))
        for key, sub in items
        if not (is_text(sub) and isinstance(space, gym.spaces.Dict))
    }
    return out if isinstance(space, gym.spaces.Dict) else tuple(out.values())


def is_text(space: gym.Space) -> bool:
    """Whether a space holds strings (gymnasium's Text, minigrid's MissionSpace, ...)."""
    if isinstance(space, gym.spaces.Text):
        return True
    if isinstance(space, (*LEAF_SPACES, gym.spaces.Dict, gym.spaces.Tuple)):
        return False
    try:
        return isinstance(space.sample(), str)
    except Exception:  # a space that cannot sample is no text space we can recognise
        return False


_warned: set[str] = set()


def _warn_text(path: str, space: gym.Space) -> None:
    if path not in _warned:
        _warned.add(path)
        log.warning("observation entry %r (%s) is left out: no encoder reads text", path, space)


def text_keys(space: gym.Space) -> list[str]:
    """The entries of a Dict space that hold text ([] for any other space)."""
    if not isinstance(space, gym.spaces.Dict):
        return []
    return [k for k, sub in space.spaces.items() if is_text(sub)]


def check_action_space(space: gym.Space) -> gym.Space:
    """``space`` if the agent has a distribution for it, else UnsupportedSpace."""
    if isinstance(space, ACTION_SPACES):
        return space
    raise UnsupportedSpace(
        f"unsupported action space {space}; rlgate acts in Box, Discrete, MultiDiscrete and "
        "MultiBinary spaces"
    )
