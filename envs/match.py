"""Passive and Active Match (Hung et al. 2019, as used by Gu et al. 2020; docs/gates.md, the tasks).

Three phases on one canvas per copy:

1. Cue (``cue_steps``). Passive: a 3x3 room whose centre is a coloured square, in view from
   every cell. Active: a 7x7 room with the square on a random wall cell and the agent on a
   random floor cell out of its view (Chebyshev distance > 2): it must explore to see it.
2. Distractor (``delay`` steps): a 7x7 room with ``num_apples`` apples; eating one pays
   ``apple_reward`` and it respawns ``apple_respawn`` steps later. No trace of the colour.
3. Choice (at most ``choice_steps``): ``num_colours`` squares in random order along the top
   of a 3-row room, one per colour. Touching the cue's colour pays ``match_reward`` and ends
   the episode; a wrong one pays 0 and ends it; timing out pays 0 and ends it.

Observation: {"image": [5, 5, 3 + num_colours] one-hot (floor, wall, apple, colours)}.
Actions: up, right, down, left. Episode statistics: success, choice_reward, apple_reward, and
``success_at_{p}`` for each position p of the cue's square in the choice room (0 = leftmost):
the episode's success where its square stood at p, NaN elsewhere, so that their NaN-skipping
means (TensorBoard's ``charts/success_at_{p}``) show which positions a policy has learned.
``cue_seen``: 1 if an observation of the cue phase showed the coloured square (always, in
Passive Match), and ``success_seen`` / ``success_unseen``: the success of the episodes that
did / did not see it (NaN in the others). In Active Match they split a failure to look from a
failure to remember: chance is 1 / num_colours for the unseen, and a memory lifts only the seen.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlgate.envs import native
from rlgate.envs.grid import APPLE, COLOUR, FLOOR, RADIUS, GridEnv, room

CUE, DISTRACTOR, CHOICE = 0, 1, 2
ROOM = 7  # interior width of the active cue room and the apple room


class MatchEnv(GridEnv):
    """Batched Passive/Active Match.

    Args:
        num_envs: N copies; device: torch device; seed: RNG seed; autoreset: see TensorEnv.
        active: Active Match (explore to find the cue) instead of Passive Match.
        delay: distractor phase length in steps (>= 0; 0 skips the phase).
        num_colours: squares in the choice phase, one per colour (>= 2).
        cue_steps: cue phase length (>= 1).
        choice_steps: time limit of the choice phase (>= 1).
        num_apples: apples in the distractor room (0..48).
        apple_reward: reward per apple.
        apple_respawn: steps until an eaten apple reappears (>= 1).
        match_reward: reward for touching the cue's colour.
    """

    stat_keys = ("choice_reward", "apple_reward", "cue_seen", "success_seen", "success_unseen")
    native_checks_actions = True  # native.match_step checks the actions' range itself

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        autoreset: bool = True,
        active: bool = False,
        delay: int = 90,
        num_colours: int = 3,
        cue_steps: int = 15,
        choice_steps: int = 15,
        num_apples: int = 6,
        apple_reward: float = 1.0,
        apple_respawn: int = 20,
        match_reward: float = 10.0,
    ):
        checks = [
            (delay >= 0, f"delay must be >= 0, got {delay}"),
            (num_colours >= 2, f"num_colours must be >= 2, got {num_colours}"),
            (cue_steps >= 1, f"cue_steps must be >= 1, got {cue_steps}"),
            (choice_steps >= 1, f"choice_steps must be >= 1, got {choice_steps}"),
            (0 <= num_apples < ROOM * ROOM, f"num_apples must be in 0..48, got {num_apples}"),
            (apple_respawn >= 1, f"apple_respawn must be >= 1, got {apple_respawn}"),
            (math.isfinite(apple_reward), f"apple_reward must be finite, got {apple_reward}"),
            (math.isfinite(match_reward), f"match_reward must be finite, got {match_reward}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        super().__init__(num_envs, device, seed, autoreset)
        self.active = bool(active)
        self.delay, self.num_colours = int(delay), int(num_colours)
        self.cue_steps, self.choice_steps = int(cue_steps), int(choice_steps)
        self.num_apples, self.apple_respawn = int(num_apples), int(apple_respawn)
        self.apple_reward, self.match_reward = float(apple_reward), float(match_reward)
        k = self.num_colours
        self.stat_keys = (*self.stat_keys, *(f"success_at_{p}" for p in range(k)))
        size = max(ROOM + 2, 2 * k + 1)
        self._init_grid(size, size, k)
        # Room templates (padded canvases) and the cells the random parts are drawn from.
        big = (1, 1, ROOM, ROOM)
        self._cue_room = self._tensor(room(size, size, big if self.active else (1, 1, 3, 3)))
        self._apple_room = self._tensor(room(size, size, big))
        self._choice_room = self._tensor(room(size, size, (1, 1, 3, 2 * k - 1)))
        # the choice room's layout: the squares along its top row, one floor cell apart, and
        # the agent's start below their middle
        squares = [(1, 2 * j + 1) for j in range(k)]
        self._square_cells = torch.tensor(squares, device=self.device) + RADIUS  # [k, 2]
        self._choice_start = torch.tensor([3, k], device=self.device) + RADIUS  # [2]
        interior = [(r, c) for r in range(1, ROOM + 1) for c in range(1, ROOM + 1)]
        self._interior = torch.tensor(interior, device=self.device) + RADIUS  # [49, 2]
        if self.active:
            edge = ROOM + 1
            walls = [(0, c) for c in range(1, edge)] + [(edge, c) for c in range(1, edge)]
            walls += [(r, 0) for r in range(1, edge)] + [(r, edge) for r in range(1, edge)]
            self._cue_cells = torch.tensor(walls, device=self.device) + RADIUS  # [28, 2]
            dist = (self._cue_cells[:, None] - self._interior[None]).abs().amax(-1)
            self._start_ok = (dist > RADIUS).float()  # [28, 49]: agent cell out of view
        else:
            self._cue_cells = torch.tensor([(2, 2)], device=self.device) + RADIUS
            cells = [(r, c) for r in range(1, 4) for c in range(1, 4) if (r, c) != (2, 2)]
            self._passive_starts = torch.tensor(cells, device=self.device) + RADIUS  # [8, 2]
        n, dev = self.num_envs, self.device
        for key in ("phase", "t_phase", "cue", "distractor_start", "cue_position"):
            self.state[key] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["cue_cell"] = torch.zeros(n, 2, dtype=torch.long, device=dev)
        # Everything random about an episode is drawn at its start, so an episode is fully
        # determined by the state (the tests step copies of it apart and compare).
        self.state["apples"] = torch.zeros(n, self.num_apples, dtype=torch.long, device=dev)
        self.state["choice_order"] = torch.zeros(n, k, dtype=torch.long, device=dev)
        self.state["apple_timer"] = torch.zeros_like(self.state["grid"], dtype=torch.long)
        for key in ("success", *self.stat_keys):
            self.state[key] = torch.zeros(n, device=dev)
        # On the CPU a step and its view are one native call each (envs/native.c); a new
        # episode's deal stays here, so both paths draw the same numbers.
        self.native = native.native_for(self.device)

    def eval_report(self, model, episodes: int, generator=None, greedy: bool = False):
        """The task's evaluation report (``rlgate eval --report``): success by cue colour and
        by position, the first choice action, the view gate and a memory probe
        (``rlgate.envs.match_report``). Returns (result dict, lines to print)."""
        from rlgate.envs import match_report

        out = match_report.choice_report(self, model, episodes, CHOICE, generator, greedy)
        return out, match_report.report_lines(out)

    @property
    def max_episode_steps(self) -> int:
        return self.cue_steps + self.delay + self.choice_steps

    # ----------------------------------------------------------------- phases
    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        draws = self._deal(idx.numel())
        if self.native:
            native.match_deal(self, idx, *draws)
        else:
            self._torch_deal(idx, *draws)

    def _deal(self, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Everything random about m new episodes, in the generator's order: the 7x7 room's
        cells in a random order (the apples on the first ``num_apples``, the agent's distractor
        start on the next) [m, 49], the choice room's colour order [m, k], the cue's colour
        [m], its cell (an index into ``_cue_cells``) [m] and the agent's start in the cue room
        (an index into ``_interior``, Active, or ``_passive_starts``) [m]."""
        order = torch.argsort(self._rand(m, self._interior.shape[0]), dim=1)
        colours = torch.argsort(self._rand(m, self.num_colours), dim=1)
        cue = self._randint(0, self.num_colours, (m,))
        if self.active:
            which = self._randint(0, self._cue_cells.shape[0], (m,))
            start = torch.multinomial(self._start_ok[which], 1, generator=self.generator)
            return order, colours, cue, which, start.squeeze(1)
        which = torch.zeros(m, dtype=torch.long, device=self.device)
        start = self._randint(0, self._passive_starts.shape[0], (m,))
        return order, colours, cue, which, start

    def _torch_deal(self, idx, order, colours, cue, which, start) -> None:
        """Start the episodes of copies ``idx`` from ``_deal``'s draws, in PyTorch ops (any
        device; the reference of ``native.match_deal``)."""
        st, k = self.state, self.num_colours
        for key in ("success", *self.stat_keys):
            st[key][idx] = 0.0
        st["apples"][idx] = order[:, : self.num_apples]
        st["distractor_start"][idx] = order[:, self.num_apples]
        st["choice_order"][idx] = colours
        # the cue room
        st["phase"][idx] = CUE
        st["t_phase"][idx] = 0
        st["grid"][idx] = self._cue_room
        st["apple_timer"][idx] = 0
        st["cue"][idx] = cue
        cell = self._cue_cells[which]
        starts = self._interior if self.active else self._passive_starts
        st["pos"][idx] = starts[start]
        st["grid"][idx, cell[:, 0], cell[:, 1]] = (COLOUR + cue).to(torch.uint8)
        st["cue_cell"][idx] = cell
        # Passive Match shows the square from the first step; Active Match from none
        seen = 0.0 if self.active else 1.0
        st["cue_seen"][idx] = seen
        st["success_seen"][idx] = 0.0 if seen else float("nan")
        st["success_unseen"][idx] = float("nan") if seen else 0.0
        # where the cue's square will stand in the choice room, and its success stat (NaN at
        # the other positions)
        pos = (colours == cue[:, None]).long().argmax(dim=1)
        st["cue_position"][idx] = pos
        for p in range(k):
            st[f"success_at_{p}"][idx] = torch.where(pos == p, 0.0, float("nan"))

    def _setup_distractor(self, idx: Tensor) -> None:
        st = self.state
        st["phase"][idx] = DISTRACTOR
        st["t_phase"][idx] = 0
        st["grid"][idx] = self._apple_room
        st["apple_timer"][idx] = 0
        apples = self._interior[st["apples"][idx]]  # [m, A, 2]
        st["grid"][idx[:, None], apples[..., 0], apples[..., 1]] = APPLE
        st["pos"][idx] = self._interior[st["distractor_start"][idx]]

    def _setup_choice(self, idx: Tensor) -> None:
        st = self.state
        st["phase"][idx] = CHOICE
        st["t_phase"][idx] = 0
        st["grid"][idx] = self._choice_room
        st["apple_timer"][idx] = 0
        colours = st["choice_order"][idx]  # a random order of the k colours
        rows, cols = self._square_cells.unbind(1)
        st["grid"][idx[:, None], rows, cols] = (COLOUR + colours).to(torch.uint8)
        st["pos"][idx] = self._choice_start

    # ----------------------------------------------------------------- dynamics
    def _step(self, actions: Tensor):
        if self.native:
            return native.match_step(self, actions)
        return self._torch_step(actions)

    def _observe(self) -> dict[str, Tensor]:
        if self.native:
            return {"image": native.grid_observe(self)}
        return super()._observe()

    def _torch_step(self, actions: Tensor):
        """``_step`` in PyTorch ops (any device; the reference of ``native.match_step``)."""
        st = self.state
        phase = st["phase"]
        target, cell = self._target(actions)
        reward = torch.zeros(self.num_envs, device=self.device)
        # Distractor: eat apples, start their respawn timers.
        eat = (phase == DISTRACTOR) & (cell == APPLE)
        reward += eat * self.apple_reward
        st["apple_reward"] += eat * self.apple_reward
        eaten = eat.nonzero().squeeze(1)
        if eaten.numel():  # (nonzero has synchronised already; most steps eat nothing)
            at = (eaten, target[eaten, 0], target[eaten, 1])
            st["grid"][at] = FLOOR
            st["apple_timer"][at] = self.apple_respawn
        # Choice: touching a coloured square ends the episode.
        chose = (phase == CHOICE) & (cell >= COLOUR)
        correct = chose & ((cell.long() - COLOUR) == st["cue"])
        reward += correct * self.match_reward
        st["choice_reward"] += correct * self.match_reward
        st["success"] = torch.where(chose, correct.float(), st["success"])
        if bool(chose.any()):  # (a choice ends an episode: ~1 step in 50)
            for p in range(self.num_colours):
                at_p = chose & (st["cue_position"] == p)
                st[f"success_at_{p}"] = torch.where(at_p, correct.float(), st[f"success_at_{p}"])
            for key in ("success_seen", "success_unseen"):  # NaN stays NaN
                st[key] = torch.where(chose & st[key].isfinite(), correct.float(), st[key])
        self._move(target, cell)
        self._respawn_apples()
        st["t_phase"] += 1
        t = st["t_phase"]
        timeout = (phase == CHOICE) & (t >= self.choice_steps) & ~chose
        terminated = chose | timeout
        end_cue = ((phase == CUE) & (t >= self.cue_steps)).nonzero().squeeze(1)
        end_distractor = ((phase == DISTRACTOR) & (t >= self.delay)).nonzero().squeeze(1)
        if self.delay > 0:
            if end_cue.numel():
                self._setup_distractor(end_cue)
            if end_distractor.numel():
                self._setup_choice(end_distractor)
        elif end_cue.numel():
            self._setup_choice(end_cue)
        if self.active:
            self._look_for_cue()
        truncated = torch.zeros_like(terminated)
        return reward, terminated, truncated

    def _look_for_cue(self) -> None:
        """Mark the copies whose next observation, still in the cue phase, shows the square
        (within ``RADIUS`` of the agent on both axes: the egocentric view)."""
        st = self.state
        near = (st["pos"] - st["cue_cell"]).abs().amax(dim=1) <= RADIUS
        new = near & (st["phase"] == CUE) & (st["cue_seen"] == 0)
        st["cue_seen"] = torch.where(new, 1.0, st["cue_seen"])
        st["success_seen"] = torch.where(new, 0.0, st["success_seen"])
        st["success_unseen"] = torch.where(new, float("nan"), st["success_unseen"])

    def _respawn_apples(self) -> None:
        st = self.state
        timer = st["apple_timer"]
        due = timer == 1
        if bool(due.any()):
            # An apple waits while the agent stands on its cell.
            pos = st["pos"]
            occupied = torch.zeros_like(due)
            occupied[self._rows, pos[:, 0], pos[:, 1]] = True
            grow = due & ~occupied
            st["grid"][grow] = APPLE
            timer[due & occupied] = 2
        timer.sub_(1).clamp_(min=0)
