"""Pictures of the tensor tasks for ``render_mode="rgb_array"`` and videos: numpy drawing of
cell grids, one copy at a time (rendering is for people watching, never on the training path).

A task turns its state into an [R, C, 3] array of cell colours, marks the agent's view and
draws the agent; ``cells_to_image`` scales that up to pixels.
"""

from __future__ import annotations

import numpy as np

#: pixels per cell
CELL = 16
#: how much the cells in the agent's view are lightened (0 = not at all, 1 = white)
VIEW_TINT = 0.35


def cells_to_image(colours: np.ndarray, cell: int = CELL) -> np.ndarray:
    """[R, C, 3] uint8 cell colours -> [R * cell, C * cell, 3] uint8, with thin grid lines."""
    image = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    image[::cell, :] = image[::cell, :] // 2 + 16
    image[:, ::cell] = image[:, ::cell] // 2 + 16
    return image


def tint(colours: np.ndarray, mask: np.ndarray, amount: float = VIEW_TINT) -> np.ndarray:
    """Cell colours with the cells of ``mask`` [R, C] lightened (the agent's view)."""
    out = colours.astype(np.float32)
    out[mask] = out[mask] * (1 - amount) + 255 * amount
    return out.astype(np.uint8)


def disc(cell: int = CELL) -> np.ndarray:
    """[cell, cell] bool: a filled circle."""
    y, x = np.mgrid[:cell, :cell] + 0.5
    r = cell * 0.35
    return (x - cell / 2) ** 2 + (y - cell / 2) ** 2 <= r * r


def triangle(direction: int, cell: int = CELL) -> np.ndarray:
    """[cell, cell] bool: a triangle pointing right, down, left or up (direction 0..3, the
    minigrid convention)."""
    y, x = (np.mgrid[:cell, :cell] + 0.5) / cell  # [0, 1]
    right = (x > 0.2) & (np.abs(y - 0.5) < 0.4 * (0.85 - x) / 0.65)
    return np.rot90(right, k=-direction).copy()


def stamp(image: np.ndarray, row: int, col: int, mask: np.ndarray, colour) -> None:
    """Paint ``mask`` (one cell's pixels) in ``colour`` into cell (row, col) of ``image``."""
    cell = mask.shape[0]
    block = image[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
    block[mask] = colour
