"""POPGym's card games on tensors: RepeatFirst, RepeatPrevious, Autoencode, CountRecall and
HigherLower (Morad et al., ICLR 2023; the ``popgym`` package), every copy of a batch dealt in
one call.

Each copy shuffles ``decks`` x 52 cards at the start of an episode and deals them one a step, as
popgym's ``Deck`` does. A card is its index in the unshuffled deck, and popgym reads its suit as
index % 4, its rank as (index // 4) % 13 and its colour as index % 2; the clone keeps, per copy,
what the game reads of each card (its suit, rank or colour: ``KIND``) in the order the cards
are dealt (``state["order"]``, [N, cards]: popgym deals from the end of its shuffled
``Deck.idx``, so the order is that array reversed). Observations,
actions, rewards (an episode's returns lie in [-1, 1]) and episode ends are popgym's, at its
parameters per difficulty (``DIFFICULTIES``); none of these games truncates.
tests/test_envs_popgym.py copies popgym's shuffled decks into the clone (``load_popgym``),
replays the same random actions in both and compares every step.

The games (C cards, t the steps taken so far, card j the j-th dealt, from 0):

- RepeatFirst: see card t, say the suit of card 0 (+-1/(C-1) a step); C-1 steps.
- RepeatPrevious: see card t, say the suit of card t+1-k once k cards are seen (+-1/(C-k));
  C-1 steps.
- Autoencode: watch cards 0..C-1 (mode 1; mode 0 from the last one on), then say their suits
  last first (+-1/C each); 2C-1 steps.
- CountRecall: see a value card and a query card from two decks; say how many value cards of
  the last query's kind (colour, suit or rank) have been dealt (+-1/(C-1)); C-1 steps.
- HigherLower: see card t's rank, guess whether the next is higher (0) or lower (1): +1/C if
  right, -1/C if wrong, 0 on a tie; C-1 steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import native
from rlgate.envs.base import TensorEnv, check_space_actions

DECK = 52
#: how popgym reads a card's kinds from its deck index
KINDS = {"colors": 2, "suits": 4, "ranks": 13}


def card_kind(cards: Tensor, kind: str) -> Tensor:
    """Deck indices -> their colour (index % 2), suit (index % 4) or rank ((index // 4) % 13)."""
    if kind == "colors":
        return cards % 2
    if kind == "suits":
        return cards % 4
    return (cards // 4) % 13


def deal(env: TensorEnv, k: int, cards: int, kind: str) -> Tensor:
    """k uniformly shuffled decks of ``cards`` cards: [k, cards], the ``kind`` of each card in
    the shuffled order. Both paths draw the same float64 uniforms from the env's generator;
    the native one (``env.native``) turns them into a Fisher-Yates shuffle, the PyTorch one
    sorts them as keys (no ties: float64)."""
    u = torch.rand((k, cards), generator=env.generator, device=env.device, dtype=torch.float64)
    kinds = card_kind(torch.arange(cards, device=env.device), kind)
    if env.native:
        return native.shuffle_kinds(u, kinds)
    return kinds[torch.argsort(u, dim=1)]


class CardGame(TensorEnv):
    """What the card games share: a shuffled deal order per copy and the step count.

    Args:
        num_envs, device, seed, autoreset: see ``TensorEnv``.
        decks: how many 52-card decks are shuffled together (popgym's ``num_decks``).
    """

    #: difficulty -> popgym's parameters for it
    DIFFICULTIES: dict[str, dict] = {}  # noqa: RUF012 (read-only by convention)
    #: the decks dealt (CountRecall deals two side by side)
    ORDERS: tuple[str, ...] = ("order",)
    #: what the game reads of a card (``card_kind``)
    KIND = "suits"
    #: the game's number in native.c's ``cardgame_step`` (its native step) and the width of
    #: the observations it writes
    GAME: int = -1
    OBS_WIDTH = 1

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, decks: int = 1):
        if not isinstance(decks, int) or decks < 1:
            raise ValueError(f"decks must be an integer >= 1, got {decks!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self.native = native.native_for(self.device)  # the shuffle's native path
        self.decks, self.num_cards = decks, DECK * decks
        n, dev = self.num_envs, self.device
        for name in self.ORDERS:
            self.state[name] = torch.zeros(n, self.num_cards, dtype=torch.long, device=dev)
        self.state["t"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["success"] = torch.full((n,), float("nan"), device=dev)  # popgym has none
        self._row_start: Tensor | None = None  # where each copy's deck starts, flattened

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        for name in self.ORDERS:
            self.state[name][idx] = deal(self, idx.numel(), self.num_cards, self.KIND)
        self.state["t"][idx] = 0

    @property
    def reward_scale(self) -> float:  # pragma: no cover - abstract
        """What a right (+) or wrong (-) answer pays."""
        raise NotImplementedError

    def step(self, actions: Tensor):
        """``TensorEnv.step``; on the native path one call steps every copy, keeps its
        episode's return and length and writes its next observation (the PyTorch path's
        auto-reset and episode statistics follow only where an episode ended)."""
        if not self.native or self.GAME < 0:
            return super().step(actions)
        n = self.num_envs
        if not (
            isinstance(actions, Tensor)
            and actions.dtype == torch.long
            and actions.shape == (n,)
            and actions.device.type == "cpu"
        ):
            actions = check_space_actions(actions, n, self.single_action_space, self.device)
        reward, terminated, truncated, done, obs, ended = native.cardgame_step(
            self, self.GAME, self.reward_scale, actions.contiguous(), self.OBS_WIDTH
        )
        return self._end_step(reward, terminated, truncated, done, ended > 0, self._as_obs(obs))

    def _as_obs(self, obs: Tensor) -> dict[str, Tensor]:
        """The native step's observations [N, OBS_WIDTH] as ``_observe`` gives them."""
        return {"obs": obs[:, 0]}

    def card(self, j: Tensor, name: str = "order") -> Tensor:
        """The ``KIND`` of the j-th dealt card of each copy, j [N] (past the deck's end: its
        last card, for a copy stepped after its episode ended without a reset)."""
        if self._row_start is None:
            self._row_start = torch.arange(self.num_envs, device=self.device) * self.num_cards
        return self.state[name].take(self._row_start + j.clamp(max=self.num_cards - 1))

    def popgym_decks(self, ref) -> tuple:
        """The popgym env's ``Deck``s, one per entry of ``ORDERS``."""
        return (ref.deck,)

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        """Deal copy ``index``'s current episode as popgym's ``ref``, just reset, deals it
        (its decks' shuffled ``idx``; popgym deals from the end)."""
        for name, deck in zip(self.ORDERS, self.popgym_decks(ref)):
            order = torch.as_tensor(np.asarray(deck.idx)[::-1].copy(), device=self.device)
            self.state[name][index] = card_kind(order, self.KIND)
        self.state["t"][index] = 0

    def _render(self, index: int) -> np.ndarray:
        """The cards dealt so far, one column each, shaded by what the game reads of them (a
        strip of 4-pixel cells)."""
        t = int(self.state["t"][index])
        dealt = self.state[self.ORDERS[0]][index, : t + 1].cpu().numpy()
        strip = np.full((1, self.num_cards, 3), 255, np.uint8)
        strip[0, : dealt.size] = (dealt * 200 // max(1, KINDS[self.KIND] - 1))[:, None]
        return np.repeat(np.repeat(strip, 8, axis=0), 4, axis=1)


class RepeatFirst(CardGame):
    """popgym's RepeatFirst: say the first card's suit at every step."""

    DIFFICULTIES = {"Easy": {"decks": 1}, "Medium": {"decks": 8}, "Hard": {"decks": 16}}  # noqa: RUF012

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, decks: int = 1):
        super().__init__(num_envs, device, seed, autoreset, decks)
        self.single_observation_space = gym.spaces.Discrete(4)
        self.single_action_space = gym.spaces.Discrete(4)

    @property
    def max_episode_steps(self) -> int:
        return self.num_cards - 1

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.card(self.state["t"])}

    GAME = 0

    @property
    def reward_scale(self) -> float:
        return 1.0 / (self.num_cards - 1)

    def _step(self, actions: Tensor):
        st = self.state
        scale = self.reward_scale
        first = st["order"][:, 0]
        reward = torch.where(actions == first, scale, -scale)
        st["t"] += 1
        terminated = st["t"] == self.num_cards - 1
        return reward, terminated, torch.zeros_like(terminated)


class RepeatPrevious(CardGame):
    """popgym's RepeatPrevious: from step k on, say the suit of the card seen k steps ago."""

    DIFFICULTIES = {  # noqa: RUF012
        "Easy": {"decks": 1, "k": 4},
        "Medium": {"decks": 2, "k": 32},
        "Hard": {"decks": 3, "k": 64},
    }

    def __init__(
        self, num_envs, device="cpu", seed=None, autoreset=True, decks: int = 1, k: int = 4
    ):
        super().__init__(num_envs, device, seed, autoreset, decks)
        if not isinstance(k, int) or not 1 <= k < self.num_cards:
            raise ValueError(f"k must be an integer in 1..{self.num_cards - 1}, got {k!r}")
        self.k = k
        self.single_observation_space = gym.spaces.Discrete(4)
        self.single_action_space = gym.spaces.Discrete(4)

    GAME = 1

    @property
    def reward_scale(self) -> float:
        return 1.0 / (self.num_cards - self.k)

    @property
    def max_episode_steps(self) -> int:
        return self.num_cards - 1

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.card(self.state["t"])}

    def _step(self, actions: Tensor):
        st = self.state
        t = st["t"]
        scale = self.reward_scale
        # t + 1 cards have been seen; from the k-th on, the one k back is asked for
        target = self.card((t + 1 - self.k).clamp(min=0))
        reward = torch.where(actions == target, scale, -scale)
        reward = torch.where(t + 1 >= self.k, reward, 0.0)
        st["t"] += 1
        terminated = st["t"] == self.num_cards - 1
        return reward, terminated, torch.zeros_like(terminated)


class Autoencode(CardGame):
    """popgym's Autoencode: watch the whole deck, then recite its suits, last card first."""

    DIFFICULTIES = {"Easy": {"decks": 1}, "Medium": {"decks": 2}, "Hard": {"decks": 3}}  # noqa: RUF012

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, decks: int = 1):
        super().__init__(num_envs, device, seed, autoreset, decks)
        self.single_observation_space = gym.spaces.Tuple(
            (gym.spaces.Discrete(2), gym.spaces.Discrete(4))
        )
        self.single_action_space = gym.spaces.Discrete(4)

    GAME, OBS_WIDTH = 2, 2

    @property
    def reward_scale(self) -> float:
        return 1.0 / self.num_cards

    def _as_obs(self, obs: Tensor) -> dict[str, Tensor]:
        return {"0": obs[:, 0], "1": obs[:, 1]}

    @property
    def max_episode_steps(self) -> int:
        return 2 * self.num_cards - 1

    def _observe(self) -> dict[str, Tensor]:
        t, last = self.state["t"], self.num_cards - 1
        watching = t < last  # mode 1 (watch) until the last card is dealt
        suit = self.card(t)
        return {"0": watching.long(), "1": torch.where(t <= last, suit, 0)}

    def _step(self, actions: Tensor):
        st = self.state
        t, last = st["t"], self.num_cards - 1
        playing = t >= last
        recite = (2 * last - t).clamp(min=0, max=last)  # the card said at this play step
        target = self.card(recite)
        scale = self.reward_scale
        reward = torch.where(playing, torch.where(actions == target, scale, -scale), 0.0)
        terminated = playing & (recite == 0)
        st["t"] += 1
        return reward, terminated, torch.zeros_like(terminated)


class CountRecall(CardGame):
    """popgym's CountRecall: count the value cards of each kind, tell the count the last query
    asked for."""

    DIFFICULTIES = {  # noqa: RUF012
        "Easy": {"decks": 1, "kind": "colors"},
        "Medium": {"decks": 2, "kind": "suits"},
        "Hard": {"decks": 4, "kind": "ranks"},
    }
    ORDERS = ("order", "query_order")

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        decks: int = 1,
        kind: str = "colors",
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.KIND = kind  # before the base class deals
        super().__init__(num_envs, device, seed, autoreset, decks)
        self.kind, self.distinct = kind, KINDS[kind]
        self.max_count = self.num_cards // self.distinct
        self.single_observation_space = gym.spaces.MultiDiscrete([self.distinct] * 2)
        self.single_action_space = gym.spaces.Discrete(self.max_count + 1)
        self.state["counts"] = torch.zeros(
            self.num_envs, self.distinct, dtype=torch.long, device=self.device
        )

    GAME, OBS_WIDTH = 3, 2

    @property
    def reward_scale(self) -> float:
        return 1.0 / (self.num_cards - 1)

    def _as_obs(self, obs: Tensor) -> dict[str, Tensor]:
        return {"obs": obs}

    @property
    def max_episode_steps(self) -> int:
        return self.num_cards - 1

    def _dealt(self) -> tuple[Tensor, Tensor]:
        t = self.state["t"]
        value, query = self.card(t), self.card(t, "query_order")
        return value, query

    def _reset(self, mask: Tensor) -> None:
        super()._reset(mask)
        self._count_first(mask)

    def _count_first(self, mask: Tensor) -> None:
        value, _ = self._dealt()
        first = torch.nn.functional.one_hot(value, self.distinct)
        self.state["counts"] = torch.where(mask[:, None], first, self.state["counts"])

    def popgym_decks(self, ref) -> tuple:
        return ref.value_deck, ref.query_deck

    def load_popgym(self, index: int, ref, seed: int | None = None) -> None:
        super().load_popgym(index, ref)
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[index] = True
        self._count_first(mask)

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": torch.stack(self._dealt(), dim=1)}

    def _step(self, actions: Tensor):
        st = self.state
        query = self.card(st["t"], "query_order")
        asked = st["counts"].gather(1, query.unsqueeze(1)).squeeze(1)
        scale = self.reward_scale
        reward = torch.where(actions == asked, scale, -scale)
        st["t"] += 1
        value = self.card(st["t"])
        st["counts"].scatter_add_(1, value.unsqueeze(1), torch.ones_like(value).unsqueeze(1))
        terminated = st["t"] == self.num_cards - 1
        return reward, terminated, torch.zeros_like(terminated)


class HigherLower(CardGame):
    """popgym's HigherLower: guess whether the next card's rank is higher (0) or lower (1)."""

    KIND = "ranks"

    DIFFICULTIES = {"Easy": {"decks": 1}, "Medium": {"decks": 2}, "Hard": {"decks": 3}}  # noqa: RUF012

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, decks: int = 1):
        super().__init__(num_envs, device, seed, autoreset, decks)
        self.single_observation_space = gym.spaces.Discrete(13)
        self.single_action_space = gym.spaces.Discrete(2)

    GAME = 4

    @property
    def reward_scale(self) -> float:
        return 1.0 / self.num_cards

    @property
    def max_episode_steps(self) -> int:
        return self.num_cards - 1

    def _observe(self) -> dict[str, Tensor]:
        return {"obs": self.card(self.state["t"])}

    def _step(self, actions: Tensor):
        st = self.state
        t = st["t"]
        now, after = self.card(t), self.card(t + 1)
        scale = self.reward_scale
        right = (after > now) == (actions == 0)
        reward = torch.where(right, scale, -scale)
        reward = torch.where(after == now, 0.0, reward)
        st["t"] += 1
        terminated = st["t"] >= self.num_cards - 1
        return reward, terminated, torch.zeros_like(terminated)
