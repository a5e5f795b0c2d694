"""T-maze (Bakker 2002 style): a corridor with a cue at its start and a left/right choice at
its end. A clean, cheap probe of memory span: the cue is out of view at the junction as soon
as the corridor is longer than the view radius.

Layout (rows 0..4, corridor on row 2, cols 1..length): the cue is a coloured square in the
wall behind the start cell (colour 0 means "up", colour 1 "down"); at the junction (col
``length``) the agent steps up or down into an arm. The right arm pays ``success_reward`` and
ends the episode; the wrong arm pays 0 and ends it. After ``max_steps`` the episode is
truncated.

Observation: {"image": [5, 5, 5] one-hot (floor, wall, apple, colour 0, colour 1)}.
Actions: up, right, down, left. Episode statistic: success.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlgate.envs.grid import COLOUR, RADIUS, GridEnv, room


class TMazeEnv(GridEnv):
    """Batched T-maze.

    Args:
        num_envs: N copies; device: torch device; seed: RNG seed; autoreset: see TensorEnv.
        length: corridor length (>= 1); the cue is out of view at the junction if > 2.
        max_steps: time limit (default 2 * length + 10).
        success_reward: reward of the right arm.
    """

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        autoreset: bool = True,
        length: int = 8,
        max_steps: int | None = None,
        success_reward: float = 1.0,
    ):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        max_steps = 2 * length + 10 if max_steps is None else max_steps
        if max_steps < length + 1:
            raise ValueError(f"max_steps must be >= length + 1 = {length + 1}, got {max_steps}")
        if not math.isfinite(success_reward):
            raise ValueError(f"success_reward must be finite, got {success_reward}")
        super().__init__(num_envs, device, seed, autoreset)
        self.length, self.max_steps = int(length), int(max_steps)
        self.success_reward = float(success_reward)
        self._init_grid(5, length + 2, num_colours=2)
        self._maze = self._tensor(room(5, length + 2, [(2, 1, 2, length), (1, length, 3, length)]))
        self._start = torch.tensor([2 + RADIUS, 1 + RADIUS], device=self.device)
        self._up = torch.tensor([1 + RADIUS, length + RADIUS], device=self.device)
        self._down = torch.tensor([3 + RADIUS, length + RADIUS], device=self.device)
        n, dev = self.num_envs, self.device
        self.state["cue"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["t"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["success"] = torch.zeros(n, device=dev)

    @property
    def max_episode_steps(self) -> int:
        return self.max_steps

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        st = self.state
        cue = self._randint(0, 2, (idx.numel(),))
        st["cue"][idx] = cue
        st["t"][idx] = 0
        st["success"][idx] = 0.0
        st["grid"][idx] = self._maze
        st["grid"][idx, 2 + RADIUS, RADIUS] = (COLOUR + cue).to(torch.uint8)
        st["pos"][idx] = self._start

    def _step(self, actions: Tensor):
        st = self.state
        target, cell = self._target(actions)
        self._move(target, cell)
        pos = st["pos"]
        up = (pos == self._up).all(-1)
        down = (pos == self._down).all(-1)
        terminated = up | down
        correct = (up & (st["cue"] == 0)) | (down & (st["cue"] == 1))
        st["success"] = torch.where(terminated, correct.float(), st["success"])
        reward = correct * self.success_reward
        st["t"] += 1
        truncated = (st["t"] >= self.max_steps) & ~terminated
        return reward.float(), terminated, truncated
