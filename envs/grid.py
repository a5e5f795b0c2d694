"""A batched 2-D grid world on tensors: walls, floor, apples and coloured squares, four moves,
and an agent-centred 5x5 one-hot view (the tasks' observation, docs/gates.md).

The canvas of copy b is ``state["grid"][b]`` ([R + 4, C + 4] cell codes, padded with walls by
the view radius so that every window is in range); the agent is at ``state["pos"][b]``
(row, col in padded coordinates). Coloured squares block movement: "touching" one means
trying to move into it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import render
from rlgate.envs.base import TensorEnv

FLOOR, WALL, APPLE, COLOUR = 0, 1, 2, 3  # COLOUR + k is colour k
VIEW = 5
RADIUS = VIEW // 2
#: moves: up, right, down, left as (d_row, d_col)
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
ACTION_NAMES = ("up", "right", "down", "left")
#: render colours (RGB): floor, wall, apple, the agent, and the coloured squares by colour
FLOOR_RGB, WALL_RGB, APPLE_RGB, AGENT_RGB = (225, 225, 225), (70, 70, 70), (220, 40, 40), (0, 0, 0)
SQUARE_RGB = ((40, 110, 240), (250, 190, 20), (40, 170, 80), (160, 60, 200), (240, 120, 30))


def room(rows: int, cols: int, interior: tuple[int, int, int, int] | list) -> np.ndarray:
    """A wall canvas [rows, cols] with the given interior rectangles (r0, c0, r1, c1), inclusive,
    made floor; padded by the view radius with walls."""
    canvas = np.full((rows + 2 * RADIUS, cols + 2 * RADIUS), WALL, dtype=np.uint8)
    rects = [interior] if isinstance(interior, tuple) else interior
    for r0, c0, r1, c1 in rects:
        canvas[r0 + RADIUS : r1 + RADIUS + 1, c0 + RADIUS : c1 + RADIUS + 1] = FLOOR
    return canvas


class GridEnv(TensorEnv):
    """Shared machinery of the grid tasks: canvas, moves and the one-hot view.

    Subclasses call ``_init_grid(rows, cols, num_colours)`` in their constructor.
    """

    observation_kinds = {"image": "grid"}  # noqa: RUF012 (one-hot channels per cell)

    def _init_grid(self, rows: int, cols: int, num_colours: int) -> None:
        self.rows, self.cols = rows, cols
        self.num_channels = COLOUR + num_colours
        self.single_observation_space = gym.spaces.Dict(
            {"image": gym.spaces.Box(0, 1, (VIEW, VIEW, self.num_channels), np.uint8)}
        )
        self.single_action_space = gym.spaces.Discrete(len(MOVES))
        n, dev = self.num_envs, self.device
        self.state["grid"] = torch.full(
            (n, rows + 2 * RADIUS, cols + 2 * RADIUS), WALL, dtype=torch.uint8, device=dev
        )
        self.state["pos"] = torch.zeros(n, 2, dtype=torch.long, device=dev)
        self._moves = torch.tensor(MOVES, dtype=torch.long, device=dev)
        self._window = torch.arange(-RADIUS, RADIUS + 1, device=dev)
        self._channels = torch.arange(self.num_channels, dtype=torch.uint8, device=dev)
        self._rows = torch.arange(n, device=dev)

    def _tensor(self, canvas: np.ndarray) -> Tensor:
        return torch.as_tensor(canvas, device=self.device)

    def _observe(self) -> dict[str, Tensor]:
        pos = self.state["pos"]
        r = pos[:, 0, None] + self._window  # [N, 5]
        c = pos[:, 1, None] + self._window
        cells = self.state["grid"][self._rows[:, None, None], r[:, :, None], c[:, None, :]]
        image = (cells.unsqueeze(-1) == self._channels).to(torch.uint8)  # [N, 5, 5, C]
        return {"image": image}

    def _render(self, index: int) -> np.ndarray:
        """The padded canvas of copy ``index``: walls dark, floor light, apples as red discs,
        coloured squares in their colour, the 5x5 view lightened, the agent a black disc."""
        grid = self.state["grid"][index].cpu().numpy()
        row, col = (int(v) for v in self.state["pos"][index])
        palette = np.array(
            [FLOOR_RGB, WALL_RGB, FLOOR_RGB, *[SQUARE_RGB[k % len(SQUARE_RGB)] for k in
             range(self.num_channels - COLOUR)]], dtype=np.uint8,
        )  # fmt: skip
        colours = palette[grid]
        view = np.zeros(grid.shape, dtype=bool)
        view[row - RADIUS : row + RADIUS + 1, col - RADIUS : col + RADIUS + 1] = True
        image = render.cells_to_image(render.tint(colours, view))
        dot = render.disc()
        for r, c in zip(*np.nonzero(grid == APPLE)):
            render.stamp(image, r, c, dot, APPLE_RGB)
        render.stamp(image, row, col, dot, AGENT_RGB)
        return image

    def _target(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The cell each copy tries to move into: (position [N, 2], cell code [N])."""
        target = self.state["pos"] + self._moves[actions]
        cell = self.state["grid"][self._rows, target[:, 0], target[:, 1]]
        return target, cell

    def _move(self, target: Tensor, cell: Tensor) -> None:
        """Move where the target is floor or apple (walls and coloured squares block)."""
        free = (cell == FLOOR) | (cell == APPLE)
        self.state["pos"] = torch.where(free.unsqueeze(-1), target, self.state["pos"])
