"""A tensor clone of minigrid's MemoryEnv (MiniGrid-MemoryS{7,9,11,13,17}-v0).

Same layout, actions, rewards, termination and observations as ``minigrid.envs.MemoryEnv``
(minigrid 3.x): a start room holding a green key or ball, a hallway, and a split with a key
and a ball; going to the one that matches the start room's object pays
1 - 0.9 * step_count / max_steps and ends the episode, the other ends it with 0, and the
episode is truncated after max_steps = 5 * size^2. Observations: {"image": [7, 7, 3] uint8
(object, colour, state) of the agent's view, rotated to face up, with minigrid's occlusion;
"direction": 0..3}. tests/test_envs_memory.py replays random actions in minigrid itself and
in the clone and compares every observation, reward and termination.

Speed comes from the fixed walls: the layout's only opaque cells are walls, identical in every
episode of a size, so the view's world coordinates and minigrid's visibility mask depend only
on (agent position, direction) and are tabulated once (``_view_table``) with the same
algorithm as minigrid's ``get_view_exts``/``slice``/``rotate_left``/``process_vis``. An
observation is then one gather of 49 packed cell codes per copy.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import native, render
from rlgate.envs.base import TensorEnv

# minigrid.core.constants
EMPTY, WALL_OBJ, KEY, BALL = 1, 2, 5, 6
GREEN, GREY = 1, 5
WALL_CODE = (WALL_OBJ, GREY, 0)
DIR_TO_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))  # right, down, left, up as (dx, dy)
VIEW = 7
#: render colours (RGB), after minigrid's
WALL_RGB, FLOOR_RGB, OBJECT_RGB, AGENT_RGB = (100, 100, 100), (0, 0, 0), (0, 200, 0), (255, 0, 0)
SIZES = (7, 9, 11, 13, 17)


def _pack(obj, colour, state):
    """One int32 per cell: object + 256 colour + 65536 state (minigrid's encoding)."""
    return obj + 256 * colour + 65536 * state


def memory_walls(size: int) -> np.ndarray:
    """The wall map [x, y] of MemoryEnv._gen_grid (fixed hallway length)."""
    w = h = size
    walls = np.zeros((w, h), dtype=bool)
    walls[:, 0] = walls[:, h - 1] = walls[0, :] = walls[w - 1, :] = True
    upper, lower = h // 2 - 2, h // 2 + 2
    end = w - 3
    walls[1:5, upper] = walls[1:5, lower] = True
    walls[4, upper + 1] = walls[4, lower - 1] = True
    walls[5:end, upper + 1] = walls[5:end, lower - 1] = True
    for j in range(h):
        if j != h // 2:
            walls[end, j] = True
        walls[end + 2, j] = True
    return walls


def _visibility(opaque: np.ndarray) -> np.ndarray:
    """minigrid's Grid.process_vis on a [7, 7] (x, y) opacity map, agent at (3, 6)."""
    n = opaque.shape[0]
    mask = np.zeros_like(opaque)
    mask[n // 2, n - 1] = True
    for j in reversed(range(n)):
        for i in range(n - 1):
            if mask[i, j] and not opaque[i, j]:
                mask[i + 1, j] = True
                if j > 0:
                    mask[i + 1, j - 1] = mask[i, j - 1] = True
        for i in reversed(range(1, n)):
            if mask[i, j] and not opaque[i, j]:
                mask[i - 1, j] = True
                if j > 0:
                    mask[i - 1, j - 1] = mask[i, j - 1] = True
    return mask


@functools.cache
def _view_table(size: int) -> tuple[np.ndarray, np.ndarray]:
    """For every agent cell (x * size + y) and direction: the world cell (flat index, -1 outside)
    seen at each view cell [i, j], and whether minigrid shows it. Shapes [size^2, 4, 7, 7].
    Cached per size: built once per process with minigrid's own algorithm."""
    walls = memory_walls(size)
    cells = np.full((size * size, 4, VIEW, VIEW), -1, dtype=np.int64)
    visible = np.zeros((size * size, 4, VIEW, VIEW), dtype=bool)
    half = VIEW // 2
    for x in range(size):
        for y in range(size):
            for d in range(4):
                # get_view_exts
                top_x, top_y = {
                    0: (x, y - half),
                    1: (x - half, y),
                    2: (x - VIEW + 1, y - half),
                    3: (x - half, y - VIEW + 1),
                }[d]
                # slice: view[i, j] is world (top_x + i, top_y + j); outside is a wall
                view = np.full((VIEW, VIEW), -1, dtype=np.int64)
                for i in range(VIEW):
                    for j in range(VIEW):
                        wx, wy = top_x + i, top_y + j
                        if 0 <= wx < size and 0 <= wy < size:
                            view[i, j] = wx * size + wy
                # rotate_left, d + 1 times: new[j, W - 1 - i] = old[i, j]
                for _ in range(d + 1):
                    rotated = np.empty_like(view)
                    for i in range(VIEW):
                        for j in range(VIEW):
                            rotated[j, VIEW - 1 - i] = view[i, j]
                    view = rotated
                opaque = np.where(view < 0, True, walls.reshape(-1)[np.maximum(view, 0)])
                cells[x * size + y, d] = view
                visible[x * size + y, d] = _visibility(opaque)
    return cells, visible


class MemoryEnv(TensorEnv):
    """Batched clone of minigrid's MemoryEnv of the given size (7, 9, 11, 13 or 17).

    Actions (minigrid's): 0 left, 1 right, 2 forward, 3 pickup (acts as toggle), 4 drop,
    5 toggle, 6 done; only the first three change anything in this task.
    """

    observation_kinds = {"image": "minigrid"}  # noqa: RUF012 (minigrid's code image)
    native_checks_actions = True  # native.memory_step checks the actions' range itself

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        autoreset: bool = True,
        size: int = 7,
    ):
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size}")
        super().__init__(num_envs, device, seed, autoreset)
        self.size = size
        self.max_steps = 5 * size * size
        self.single_observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (VIEW, VIEW, 3), np.uint8),
                "direction": gym.spaces.Discrete(4),
            }
        )
        self.single_action_space = gym.spaces.Discrete(7)
        dev, n, cells = self.device, num_envs, size * size
        # The world of a copy is [size^2 + 3] packed cell codes (object + 256 colour + 65536
        # state), x-major; the three extra cells are the constants a view shows for a cell
        # outside the grid (a wall), a cell it cannot see (0) and the agent's own cell (empty).
        self._outside, self._unseen, self._agent = cells, cells + 1, cells + 2
        view_cells, visible = _view_table(size)
        lookup = np.where(view_cells < 0, self._outside, view_cells)
        lookup = np.where(visible, lookup, self._unseen)
        lookup[:, :, VIEW // 2, VIEW - 1] = self._agent
        self._lookup = torch.as_tensor(lookup, device=dev)  # [size^2, 4, 7, 7] world indices
        walls = memory_walls(size).reshape(-1)
        template = np.full(cells + 3, _pack(EMPTY, 0, 0), dtype=np.int32)
        template[:cells][walls] = _pack(*WALL_CODE)
        template[self._outside], template[self._unseen] = _pack(*WALL_CODE), 0
        self._template = torch.as_tensor(template, device=dev)
        self._shifts = torch.tensor([0, 8, 16], dtype=torch.int32, device=dev)
        self._dir_vec = torch.tensor(DIR_TO_VEC, dtype=torch.long, device=dev)
        self._rows = torch.arange(n, device=dev)
        self.state.update(
            world=self._template.expand(n, cells + 3).clone(),  # [N, x * size + y (+3)]
            pos=torch.zeros(n, 2, dtype=torch.long, device=dev),  # (x, y)
            dir=torch.zeros(n, dtype=torch.long, device=dev),
            step_count=torch.zeros(n, dtype=torch.long, device=dev),
            success_pos=torch.zeros(n, 2, dtype=torch.long, device=dev),
            failure_pos=torch.zeros(n, 2, dtype=torch.long, device=dev),
            success=torch.zeros(n, device=dev),
        )
        # On the CPU a step and its view are one native call each (envs/native.c); a new
        # episode's layout stays here.
        self.native = native.native_for(self.device)

    @property
    def max_episode_steps(self) -> int:
        return self.max_steps

    def _flat(self, x: Tensor, y: Tensor) -> Tensor:
        return x * self.size + y

    def _reset(self, mask: Tensor) -> None:
        """MemoryEnv._gen_grid for the masked copies."""
        idx = mask.nonzero().squeeze(1)
        st, m, s = self.state, idx.numel(), self.size
        mid, end = s // 2, s - 3
        st["world"][idx] = self._template
        start_obj = torch.where(self._randint(0, 2, (m,)) == 0, KEY, BALL)
        swap = self._randint(0, 2, (m,)) == 1  # other_objs = [Ball, Key] or [Key, Ball]
        obj0 = torch.where(swap, KEY, BALL)
        obj1 = torch.where(swap, BALL, KEY)
        for (x, y), obj in (
            ((1, mid - 1), start_obj),
            ((end + 1, mid - 2), obj0),
            ((end + 1, mid + 2), obj1),
        ):
            st["world"][idx, x * s + y] = (obj + 256 * GREEN).to(torch.int32)
        top = torch.tensor([end + 1, mid - 1], device=self.device)  # next to obj0
        bottom = torch.tensor([end + 1, mid + 1], device=self.device)  # next to obj1
        match_top = (start_obj == obj0).unsqueeze(-1)
        st["success_pos"][idx] = torch.where(match_top, top, bottom)
        st["failure_pos"][idx] = torch.where(match_top, bottom, top)
        x = self._randint(1, end + 1, (m,))
        st["pos"][idx] = torch.stack([x, torch.full_like(x, mid)], dim=-1)
        st["dir"][idx] = 0
        st["step_count"][idx] = 0
        st["success"][idx] = 0.0

    def _step(self, actions: Tensor):
        if self.native:
            return native.memory_step(self, actions)
        return self._torch_step(actions)

    def _torch_step(self, actions: Tensor):
        """``_step`` in PyTorch ops (any device; the reference of ``native.memory_step``)."""
        st = self.state
        left, right, forward = actions == 0, actions == 1, actions == 2
        st["dir"] = torch.where(left, (st["dir"] - 1) % 4, st["dir"])
        st["dir"] = torch.where(right, (st["dir"] + 1) % 4, st["dir"])
        fwd = st["pos"] + self._dir_vec[st["dir"]]
        fwd_obj = st["world"][self._rows, self._flat(fwd[:, 0], fwd[:, 1])] & 255
        move = forward & (fwd_obj == EMPTY)
        st["pos"] = torch.where(move.unsqueeze(-1), fwd, st["pos"])
        st["step_count"] += 1
        success = (st["pos"] == st["success_pos"]).all(-1)
        failure = (st["pos"] == st["failure_pos"]).all(-1)
        reward = torch.where(success, 1.0 - 0.9 * (st["step_count"] / self.max_steps), 0.0)
        st["success"] = success.float()
        terminated = success | failure
        truncated = st["step_count"] >= self.max_steps
        return reward.float(), terminated, truncated

    def _observe(self) -> dict[str, Tensor]:
        if self.native:
            return native.memory_observe(self)
        st = self.state
        here = self._flat(st["pos"][:, 0], st["pos"][:, 1])
        codes = st["world"][self._rows[:, None, None], self._lookup[here, st["dir"]]]
        image = (codes.unsqueeze(-1) >> self._shifts) & 255  # [N, 7, 7, 3]
        return {"image": image.to(torch.uint8), "direction": st["dir"].clone()}

    def _render(self, index: int) -> np.ndarray:
        """minigrid's picture, simplified: walls grey, floor black, the green key and balls as
        green squares and discs, the agent's 7x7 view lightened, the agent a red triangle
        pointing where it faces."""
        s = self.size
        world = self.state["world"][index, : s * s].cpu().numpy().reshape(s, s).T  # [y, x]
        obj = world & 255
        colours = np.where((obj == WALL_OBJ)[..., None], WALL_RGB, FLOOR_RGB).astype(np.uint8)
        x, y = (int(v) for v in self.state["pos"][index])
        direction = int(self.state["dir"][index])
        # minigrid's get_view_exts: the view is in front of the agent, which stands at the
        # middle of its back row
        dx, dy = DIR_TO_VEC[direction]
        x0 = x - VIEW // 2 + dx * (VIEW // 2) if dx else x - VIEW // 2
        y0 = y - VIEW // 2 + dy * (VIEW // 2) if dy else y - VIEW // 2
        view = np.zeros((s, s), dtype=bool)
        view[max(y0, 0) : max(y0 + VIEW, 0), max(x0, 0) : max(x0 + VIEW, 0)] = True
        image = render.cells_to_image(render.tint(colours, view))
        square = np.zeros((render.CELL, render.CELL), dtype=bool)
        square[3:-3, 3:-3] = True
        for kind, mask in ((KEY, square), (BALL, render.disc())):
            for r, c in zip(*np.nonzero(obj == kind)):
                render.stamp(image, r, c, mask, OBJECT_RGB)
        render.stamp(image, y, x, render.triangle(direction), AGENT_RGB)
        return image

    def load_minigrid(self, index: int, env) -> None:
        """Copy the current state of a ``minigrid.envs.MemoryEnv`` into copy ``index``."""
        base = env.unwrapped
        if base.width != self.size or base.random_length:
            raise ValueError(f"expected a fixed-length MemoryEnv of size {self.size}")
        world = base.grid.encode().astype(np.int32).reshape(-1, 3)  # x-major, like ours
        st = self.state
        st["world"][index, : self.size**2] = torch.as_tensor(
            _pack(world[:, 0], world[:, 1], world[:, 2]), device=self.device
        )
        st["pos"][index] = torch.as_tensor(tuple(base.agent_pos), device=self.device)
        st["dir"][index] = int(base.agent_dir)
        st["step_count"][index] = int(base.step_count)
        st["success_pos"][index] = torch.as_tensor(base.success_pos, device=self.device)
        st["failure_pos"][index] = torch.as_tensor(base.failure_pos, device=self.device)
