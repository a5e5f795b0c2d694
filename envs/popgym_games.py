"""POPGym's board and bandit games on tensors: MultiarmedBandit, Concentration, Battleship and
MineSweeper (the ``popgym`` package's), every copy of a batch stepped in one call, at popgym's
parameters per difficulty (``DIFFICULTIES``). Observations, actions, rewards and episode ends
are popgym's; tests/test_envs_popgym.py copies popgym's random draws of each episode into the
clone (``load_popgym``) and replays the same random actions in both.

- MultiarmedBandit: arms pay with probabilities drawn at the episode's start; pulling arm a
  shows 1 and pays +1/L where a uniform draw falls below its probability, else shows 0 and
  pays -1/L; truncated after L steps. The clone draws the episode's L uniforms (float64, as
  popgym's ``random()``) at its start.
- Concentration: a shuffled deck face down (popgym's ``Deck``; the value of a card is its
  colour or rank); flip two cards a turn, a pair stays up (+1/(C/2)); flipping a card already
  up costs -1/L per card in play, a mismatch (or the same card twice) -2/L; ends when every
  card is up, truncated after L = ceil(2C - C/(2C - 1)) steps.
- Battleship: ships of sizes 2, 3, 3, 4 hidden on an S x S board; fire at a square: a new hit
  shows 1 and pays 1/12, anything else shows 0 and pays -1/(S^2 - 12); ends when every ship
  square is hit, truncated after S^2 shots. Ships are placed as popgym places them: uniform
  start, axis and direction, redrawn until the ship fits the board and crosses no other.
- MineSweeper: mines on an H x W board; uncover a square: a mine ends the episode (-0.5 -
  1/L), a square uncovered before costs -0.5/(L - 2), a new one pays 1/L and shows how many
  mines its 3 x 3 block holds; ends when every clear square is uncovered, truncated after
  L = H W - mines steps.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import native
from rlgate.envs.base import TensorEnv
from rlgate.envs.popgym_cards import DECK, card_kind, deal


class _Game(TensorEnv):
    DIFFICULTIES: dict[str, dict] = {}  # noqa: RUF012 (read-only by convention)

    def __init__(self, num_envs, device, seed, autoreset):
        super().__init__(num_envs, device, seed, autoreset)
        #: whether the steps (and boards) take envs/native.c's path, which checks the actions
        self.native = self.native_checks_actions = native.native_for(self.device)
        n, dev = self.num_envs, self.device
        self.state["t"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["success"] = torch.full((n,), float("nan"), device=dev)  # popgym has none

    def _mask(self, index: int) -> Tensor:
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[index] = True
        return mask

    def _render(self, index: int) -> np.ndarray:
        """The board the agent has uncovered so far, 8 pixels a square (grey: unknown)."""
        board = self._picture(index)
        return np.repeat(np.repeat(board, 8, axis=0), 8, axis=1)

    def _picture(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class MultiarmedBandit(_Game):
    """popgym's MultiarmedBandit."""

    DIFFICULTIES = {  # noqa: RUF012
        "Easy": {"arms": 10, "length": 200},
        "Medium": {"arms": 20, "length": 400},
        "Hard": {"arms": 30, "length": 600},
    }

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        arms: int = 10,
        length: int = 200,
    ):
        if not isinstance(arms, int) or arms < 1:
            raise ValueError(f"arms must be an integer >= 1, got {arms!r}")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self.arms, self.length = arms, length
        self.single_observation_space = gym.spaces.Discrete(2)
        self.single_action_space = gym.spaces.Discrete(arms)
        n, dev = self.num_envs, self.device
        self.state["arms"] = torch.zeros(n, arms, device=dev)
        self.state["draws"] = torch.zeros(n, length, dtype=torch.float64, device=dev)
        self.state["shown"] = torch.zeros(n, dtype=torch.long, device=dev)

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        k, st, g, dev = idx.numel(), self.state, self.generator, self.device
        st["arms"][idx] = torch.rand((k, self.arms), generator=g, device=dev)
        st["draws"][idx] = torch.rand(
            (k, self.length), generator=g, device=dev, dtype=torch.float64
        )
        st["t"][idx] = 0
        st["shown"][idx] = 0

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        """Copy the episode popgym's ``ref`` has just reset into copy ``index``: its arms, and
        the uniforms its generator will draw (read from a copy of that generator)."""
        import copy

        rng = copy.deepcopy(ref.np_random)
        draws = np.array([rng.random() for _ in range(self.length)])
        st = self.state
        st["arms"][index] = torch.as_tensor(ref.bandits, device=self.device)
        st["draws"][index] = torch.as_tensor(draws, device=self.device)
        st["t"][index] = 0
        st["shown"][index] = 0

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.state["shown"].clone()}

    def _step(self, actions: Tensor):
        if self.native:
            return native.bandit_step(self, actions)
        st = self.state
        t = st["t"].clamp(max=self.length - 1)
        u = st["draws"].gather(1, t.unsqueeze(1)).squeeze(1)
        p = st["arms"].gather(1, actions.unsqueeze(1)).squeeze(1)
        paid = u < p.double()  # popgym compares the float64 draw with the float32 arm
        st["shown"] = paid.long()
        reward = torch.where(paid, 1.0 / self.length, -1.0 / self.length)
        truncated = st["t"] >= self.length - 1
        st["t"] += 1
        return reward.float(), torch.zeros_like(truncated), truncated

    def _picture(self, index: int) -> np.ndarray:
        arms = (self.state["arms"][index].cpu().numpy() * 255).astype(np.uint8)
        return np.repeat(arms[None, :, None], 3, axis=2)


class Concentration(_Game):
    """popgym's Concentration (the memory card game)."""

    DIFFICULTIES = {  # noqa: RUF012
        "Easy": {"decks": 1, "kind": "colors"},
        "Medium": {"decks": 2, "kind": "colors"},
        "Hard": {"decks": 1, "kind": "ranks"},
    }
    KINDS = {"colors": 2, "ranks": 13}  # noqa: RUF012 (suits: 13 of each, no pairs)

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        decks: int = 1,
        kind: str = "ranks",
    ):
        if not isinstance(decks, int) or decks < 1:
            raise ValueError(f"decks must be an integer >= 1, got {decks!r}")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self.kind, self.num_cards = kind, DECK * decks
        c = self.num_cards
        self.length = math.ceil(2 * c - (c / (2 * c - 1)))
        self.facedown = self.KINDS[kind]
        self.single_observation_space = gym.spaces.MultiDiscrete([self.facedown + 1] * c)
        self.single_action_space = gym.spaces.Discrete(c)
        n, dev = self.num_envs, self.device
        self.state["values"] = torch.zeros(n, c, dtype=torch.long, device=dev)
        # what shows of each square with no card turned: its value where a pair is up
        self.state["board"] = torch.full((n, c), self.facedown, dtype=torch.long, device=dev)
        self.state["pairs"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["first"] = torch.full((n,), -1, dtype=torch.long, device=dev)
        # the squares turned at the last step (the turn's first card and this one; -1: none):
        # popgym shows them in that step's observation, before a finished turn hides them
        self.state["turned"] = torch.full((n, 2), -1, dtype=torch.long, device=dev)

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def _deal(self, idx: Tensor, values: Tensor) -> None:
        st = self.state
        st["values"][idx] = values
        st["board"][idx] = self.facedown
        st["pairs"][idx] = 0
        st["first"][idx] = -1
        st["turned"][idx] = -1
        st["t"][idx] = 0

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        self._deal(idx, deal(self, idx.numel(), self.num_cards, self.kind))

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        """Lay out copy ``index`` as popgym's ``ref`` has just dealt (its ``Deck.idx``)."""
        cards = torch.as_tensor(np.asarray(ref.deck.idx), device=self.device)
        self._deal(torch.tensor([index], device=self.device), card_kind(cards, self.kind)[None])

    def _observe(self) -> dict[str, Tensor]:
        if self.native:
            return {"obs": native.concentration_observe(self)}
        st = self.state
        turned, valid = st["turned"], st["turned"] >= 0
        at = turned.clamp(min=0)
        src = torch.where(valid, st["values"].gather(1, at), st["board"].gather(1, at))
        # where the turn's first card is not shown, write the second's again (no clash)
        at = torch.where(valid[:, :1], at, at[:, 1:])
        src = torch.where(valid[:, :1], src, src[:, 1:])
        return {"obs": st["board"].clone().scatter_(1, at, src)}

    def _step(self, actions: Tensor):
        if self.native:
            return native.concentration_step(self, actions)
        st = self.state
        first = st["first"]
        has_first = first >= 0
        success, failure = 1.0 / (self.num_cards // 2), -1.0 / self.length
        both = torch.stack([actions, first.clamp(min=0)], dim=1)  # [N, 2]
        board = st["board"].gather(1, both)
        already_up = board[:, 0] != self.facedown
        values = st["values"].gather(1, both)
        pair = has_first & ~already_up & (values[:, 0] == values[:, 1]) & (first != actions)
        reward = torch.where(
            already_up,
            failure * (1.0 + has_first.float()),  # per card in play
            torch.where(has_first, torch.where(pair, success, 2 * failure), 0.0),
        )
        st["turned"] = torch.stack([first, actions], dim=1)  # first is -1 where none
        st["board"].scatter_(1, both, torch.where(pair[:, None], values, board))
        st["pairs"] += pair.long()
        terminated = pair & (st["pairs"] == self.num_cards // 2)
        truncated = st["t"] >= self.length - 1
        st["t"] += 1
        # a turn goes on where this step turned its first card
        st["first"] = torch.where(~has_first & ~already_up, actions, -1)
        return reward, terminated, truncated

    def _picture(self, index: int) -> np.ndarray:
        obs = self._observe()["obs"][index].cpu().numpy()
        grey = np.where(obs == self.facedown, 128, obs * 255 // max(1, self.facedown - 1))
        return np.repeat(grey.astype(np.uint8)[None, :, None], 3, axis=2)


def _box_sum(x: Tensor) -> Tensor:
    """[N, H, W] -> the sum over each square's 3 x 3 block (itself included; zeros outside)."""
    h, w = x.shape[1:]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    return sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3))


class Battleship(_Game):
    """popgym's Battleship."""

    DIFFICULTIES = {"Easy": {"size": 8}, "Medium": {"size": 10}, "Hard": {"size": 12}}  # noqa: RUF012
    SHIPS = (2, 3, 3, 4)

    pools = {"uniform": len(SHIPS)}  # noqa: RUF012 (a new board's: one uniform per ship)

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, size: int = 10):
        if not isinstance(size, int) or size < max(self.SHIPS):
            raise ValueError(f"size must be an integer >= {max(self.SHIPS)}, got {size!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self._ships = torch.tensor(self.SHIPS)
        self.size, self.needed, self.length = size, sum(self.SHIPS), size * size
        # what a shot pays: a new hit, anything else (float32, as the PyTorch path pays it)
        self.hit_reward, self.miss_reward = 1.0 / self.needed, -1.0 / (self.length - self.needed)
        self.single_observation_space = gym.spaces.Discrete(2)
        self.single_action_space = gym.spaces.MultiDiscrete([size, size])
        n, dev = self.num_envs, self.device
        self.state["board"] = torch.zeros(n, size, size, dtype=torch.bool, device=dev)
        self.state["guessed"] = torch.zeros(n, size, size, dtype=torch.bool, device=dev)
        self.state["hits"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["shown"] = torch.zeros(n, dtype=torch.long, device=dev)
        self._segments: dict[int, Tensor] = {}  # ship length -> its places (``segments``)
        self._first_square: Tensor | None = None  # each copy's first square in the flat boards

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def segments(self, ship: int) -> Tensor:
        """Every place a ship of length ``ship`` can lie on the empty board, [P, S * S] bool:
        along rows (row i, first column j at i * (S - l + 1) + j), then along columns (column
        j, first row i at S * (S - l + 1) + j * (S - l + 1) + i)."""
        s, dev = self.size, self.device
        lines = torch.arange(s, device=dev)
        starts = torch.arange(s - ship + 1, device=dev)
        run = (lines >= starts[:, None]) & (lines < starts[:, None] + ship)  # [S - l + 1, S]
        one = torch.eye(s, dtype=torch.bool, device=dev)
        across = one[:, None, :, None] & run[None, :, None, :]  # row i, columns of the run
        down = run[None, :, :, None] & one[:, None, None, :]  # column j, rows of the run
        return torch.cat([across.reshape(-1, s * s), down.reshape(-1, s * s)])

    @staticmethod
    def crossed(boards: Tensor, ship: int) -> Tensor:
        """Which places of ``segments(ship)`` cross a ship already on ``boards`` [k, S, S]
        bool: [k, P] bool, from the ship squares each window of ``ship`` squares along a row
        or a column holds (running sums, not a product with every place)."""
        k = boards.shape[0]
        sums = torch.nn.functional.pad(boards.to(torch.int32).cumsum(2), (1, 0))  # [k, S, S+1]
        rows = sums[:, :, ship:] - sums[:, :, :-ship]  # [k, S (row), S - l + 1 (first column)]
        sums = torch.nn.functional.pad(boards.to(torch.int32).cumsum(1), (0, 0, 1, 0))
        cols = (sums[:, ship:] - sums[:, :-ship]).transpose(1, 2)  # [k, S (column), first row]
        return torch.cat([rows.reshape(k, -1), cols.reshape(k, -1)], dim=1) > 0

    def place(self, u: Tensor) -> Tensor:
        """k boards [k, S, S] bool with the ships placed as popgym places them, from uniforms
        u [k, len(SHIPS)] float64.

        popgym draws a start square, an axis and a direction uniformly and redraws until the
        ship lies on the board and crosses no ship placed before. Every such place is drawn by
        exactly two of those (start, axis, direction) triples (from either end, towards the
        other), so each ship lands uniformly on the places still free: that is what this draws,
        for every board at once, ship by ship (no redraws): ship j goes to the floor(u F)-th of
        its F free places (in ``segments`` order), u a float64 uniform per board and ship. The
        native path (``self.native``) does the same in one call."""
        s, dev, k = self.size, self.device, u.shape[0]
        if self.native:
            return native.battleship_place(u, s, self._ships)
        boards = torch.zeros(k, s, s, dtype=torch.bool, device=dev)
        for j, ship in enumerate(self.SHIPS):
            seg = self._segments.get(ship)
            if seg is None:
                seg = self._segments[ship] = self.segments(ship)
            free = ~self.crossed(boards, ship)
            count = free.sum(1)
            if bool((count == 0).any()):
                raise RuntimeError(f"a ship of {ship} finds no place on a {s} x {s} board")
            pick = torch.minimum((u[:, j] * count).long(), count - 1)
            choice = (free.cumsum(1) > pick[:, None]).int().argmax(1)  # the pick-th free place
            boards |= seg[choice].view(k, s, s)
        return boards

    def _set(self, idx: Tensor, boards: Tensor) -> None:
        st = self.state
        st["board"][idx] = boards
        st["guessed"][idx] = False
        st["hits"][idx] = 0
        st["shown"][idx] = 0
        st["t"][idx] = 0

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        k = idx.numel()
        self._set(idx, self.place(self._take("uniform", k * len(self.SHIPS)).view(k, -1)))

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        """Copy the board popgym's ``ref`` has just placed into copy ``index``."""
        board = torch.as_tensor(ref.board != 0, device=self.device)
        self._set(torch.tensor([index], device=self.device), board[None])

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.state["shown"].clone()}

    def step(self, actions: Tensor):
        """``TensorEnv.step``; on the native path one call (``battleship_run``) fires every
        copy's shot, keeps its books, deals new boards where episodes ended and observes."""
        if not self.native:
            return super().step(actions)
        run = lambda a: native.battleship_run(self, a, self._ships)  # noqa: E731
        return self._whole_step(actions, run, lambda obs: {"obs": obs})

    def _step(self, actions: Tensor):
        st = self.state
        squares = self.size * self.size
        if self._first_square is None:
            self._first_square = torch.arange(self.num_envs, device=self.device) * squares
        at = self._first_square + actions[:, 0] * self.size + actions[:, 1]  # flat square index
        guessed = st["guessed"].view(-1)
        hit = st["board"].view(-1)[at] & ~guessed[at]
        guessed[at] = True
        st["hits"] += hit.long()
        st["shown"] = hit.long()
        st["t"] += 1
        reward = torch.where(hit, 1.0 / self.needed, -1.0 / (self.length - self.needed))
        return reward, st["hits"] == self.needed, st["t"] >= self.length

    def _picture(self, index: int) -> np.ndarray:
        st = self.state
        board, guessed = st["board"][index].cpu().numpy(), st["guessed"][index].cpu().numpy()
        out = np.full((*board.shape, 3), 128, np.uint8)
        out[guessed & board] = (200, 30, 30)
        out[guessed & ~board] = (30, 30, 200)
        return out


class MineSweeper(_Game):
    """popgym's MineSweeper."""

    DIFFICULTIES = {  # noqa: RUF012
        "Easy": {"height": 4, "width": 4, "mines": 2},
        "Medium": {"height": 6, "width": 6, "mines": 6},
        "Hard": {"height": 8, "width": 8, "mines": 10},
    }

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        height: int = 4,
        width: int = 4,
        mines: int = 2,
    ):
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(mines, int) or not 1 <= mines <= height * width - 3:
            raise ValueError(f"mines must be an integer in 1..{height * width - 3}, got {mines!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self.height, self.width, self.mines = height, width, mines
        self.length = height * width - mines
        self.success = 1.0 / self.length
        self.failure = -0.5 - self.success
        self.repeat = -0.5 / (self.length - 2)
        self.single_observation_space = gym.spaces.Discrete(min(mines + 1, 10))
        self.single_action_space = gym.spaces.MultiDiscrete([height, width])
        n, dev = self.num_envs, self.device
        shape = (n, height, width)
        self.state["mines"] = torch.zeros(shape, dtype=torch.bool, device=dev)
        self.state["viewed"] = torch.zeros(shape, dtype=torch.bool, device=dev)
        self.state["counts"] = torch.zeros(shape, dtype=torch.long, device=dev)
        self.state["shown"] = torch.zeros(n, dtype=torch.long, device=dev)

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def _set(self, idx: Tensor, mines: Tensor, counts: Tensor | None = None) -> None:
        st = self.state
        st["mines"][idx] = mines
        st["counts"][idx] = _box_sum(mines.long()) if counts is None else counts
        st["viewed"][idx] = False
        st["shown"][idx] = 0
        st["t"][idx] = 0

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        k, cells = idx.numel(), self.height * self.width
        if self.native:  # a partial Fisher-Yates shuffle's squares, the counts with them
            u = torch.rand((k, cells), generator=self.generator, dtype=torch.float64)
            self._set(idx, *native.minesweeper_lay(u, self.height, self.width, self.mines))
            return
        keys = torch.rand((k, cells), generator=self.generator, device=self.device)
        chosen = torch.argsort(keys, dim=1)[:, : self.mines]  # a uniform subset, as popgym's
        mines = torch.zeros(k, cells, dtype=torch.bool, device=self.device)
        mines.scatter_(1, chosen, True)
        self._set(idx, mines.view(k, self.height, self.width))

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        """Copy the mines popgym's ``ref`` has just laid into copy ``index``."""
        mines = torch.as_tensor(ref.hidden_grid == 1, device=self.device)
        self._set(torch.tensor([index], device=self.device), mines[None])

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.state["shown"].clone()}

    def _step(self, actions: Tensor):
        if self.native:
            return native.minesweeper_step(self, actions)
        st = self.state
        n = self.num_envs
        cell = (actions[:, 0] * self.width + actions[:, 1]).unsqueeze(1)
        mines, viewed = st["mines"].view(n, -1), st["viewed"].view(n, -1)
        mine, seen = mines.gather(1, cell).squeeze(1), viewed.gather(1, cell).squeeze(1)
        reward = torch.where(mine, self.failure, torch.where(seen, self.repeat, self.success))
        viewed.scatter_(1, cell, (seen | ~mine).unsqueeze(1))
        st["t"] += 1
        terminated = mine | (viewed | mines).all(dim=1)
        truncated = (st["t"] == self.length) & ~terminated
        st["shown"] = st["counts"].view(n, -1).gather(1, cell).squeeze(1)
        return reward, terminated, truncated

    def _picture(self, index: int) -> np.ndarray:
        st = self.state
        viewed = st["viewed"][index].cpu().numpy()
        counts = st["counts"][index].cpu().numpy()
        out = np.full((*viewed.shape, 3), 128, np.uint8)
        out[viewed] = np.stack([255 - 25 * counts[viewed]] * 3, axis=-1).clip(0, 255)
        return out
