"""The native CPU kernels of POPGym's clones and the Match tasks (native.c beside this file),
and when an env uses them.

On a CPU, a step of 1024 copies of a cheap game is a few dozen PyTorch ops of a few
microseconds each, whatever their size; native.c does a deck's shuffle, a board's ships, a
CartPole step, a Concentration turn and a Match step for every copy in one call. It is
compiled like the gate kernels (``rlgate.cores.native.build``: a C compiler on first use,
cached per machine). An env on the CPU uses it where it can be built (``native_for``), and
says with a WARNING, once, where it can't (then the PyTorch path runs, a few times slower);
``RLGATE_NATIVE_ENVS=0`` turns it off. Every wrapper checks the dtype, shape and contiguity of
what it hands over, and the kernels check every index they read or write through.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from rlgate.cores.native import NativeUnavailable, build

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
_L, _P, _F = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
SIGNATURES = {
    "shuffle_kinds": (_L, _L, _P, _P, _P),
    "battleship_place": (_L, _L, _L, _P, _P, _P),
    "cartpole_run": (_L, _L, _L, _L, _P, _P, _P, _P, _P, _P, _L, _P, _P, _L, *[_P] * 9),
    "concentration_step": (_L, _L, _L, _L, _F, _F, *[_P] * 10),
    "concentration_observe": (_L, _L, _P, _P, _P, _P),
    "battleship_run": (_L, _L, _L, _P, _L, _F, _F, *[_P] * 9, _L, *[_P] * 7),
    "cardgame_step": (_L, _L, _L, _L, _L, _L, _F, *[_P] * 12),
    "step_bookkeeping": (_L, *[_P] * 6),
    "bandit_step": (_L, _L, _L, *[_P] * 7),
    "minesweeper_lay": (_L, _L, _L, _L, _P, _P, _P),
    "minesweeper_step": (_L, _L, _L, _L, _F, _F, _F, *[_P] * 9),
    "episode_ends": (_L, *[_P] * 6),
    "pendulum_step": (_L, _L, ctypes.c_double, *[_P] * 6),
    "match_step": (*[_L] * 10, _F, _F, *[_P] * 26),
    "grid_observe": (_L, _L, _L, _L, _P, _P, _P),
    "match_deal": (*[_L] * 7, _F, _P, _P, _P, _L, *[_P] * 24),
    "memory_step": (_L, _L, _L, *[_P] * 11),
    "memory_observe": (_L, _L, *[_P] * 6),
}
#: kernels that return a count, or -1
COUNTING = ("cardgame_step", "step_bookkeeping", "episode_ends", "cartpole_run", "battleship_run")


@functools.cache
def _load() -> ctypes.CDLL | NativeUnavailable:
    try:
        lib = build(SOURCE, "envs", extra=("-lm",))
    except NativeUnavailable as e:
        return e
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int64 if name in COUNTING else ctypes.c_int
    return lib


def available() -> tuple[bool, str]:
    """Whether the env kernels can run here (building them on first call), and if not, why."""
    lib = _load()
    return (False, str(lib)) if isinstance(lib, NativeUnavailable) else (True, "")


@functools.cache
def _warn_once(reason: str) -> None:
    log.warning(
        "POPGym's and the Match tasks' envs on the CPU take their PyTorch path (a few times "
        "slower): %s",
        reason,
    )


def native_for(device: torch.device) -> bool:
    """Whether an env on ``device`` steps with the native kernels: on the CPU where they build
    (a WARNING, once, where they don't), unless $RLGATE_NATIVE_ENVS is 0."""
    if device.type != "cpu" or os.environ.get("RLGATE_NATIVE_ENVS", "1") == "0":
        return False
    ok, why = available()
    if not ok:
        _warn_once(why)
    return ok


def _ptr(x: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    if x.dtype is not dtype or x.shape != shape or not x.is_contiguous() or not x.is_cpu:
        raise ValueError(
            f"native env kernel: expected a contiguous CPU {dtype} tensor of shape {shape}, "
            f"got {x.dtype} {tuple(x.shape)}"
        )
    return x.data_ptr()


def _check(code: int, what: str) -> None:
    if code != 0:
        raise ValueError(f"native env kernel {what}: an index or size out of range")


def _lib() -> ctypes.CDLL:
    lib = _load()
    if isinstance(lib, NativeUnavailable):
        raise lib
    return lib


def shuffle_kinds(u: Tensor, kinds: Tensor) -> Tensor:
    """Fisher-Yates shuffles of a deck, one per row of u [k, C] (float64 uniforms; u[:, 0] is
    unused): [k, C] int64, the kinds [C] int64 of the deck's cards in the shuffled order."""
    k, c = u.shape
    out = torch.empty(k, c, dtype=torch.long)
    code = _lib().shuffle_kinds(
        k, c, _ptr(u, torch.float64, (k, c)), _ptr(kinds, torch.long, (c,)), out.data_ptr()
    )
    _check(code, "shuffle_kinds")
    return out


def battleship_place(u: Tensor, size: int, ships: Tensor) -> Tensor:
    """k boards [k, size, size] bool with ships [s] int64 placed, ship j of board r on the
    floor(u[r, j] F)-th of its F free places (u [k, s] float64), as Battleship.place."""
    k, s = u.shape
    boards = torch.empty(k, size, size, dtype=torch.uint8)
    code = _lib().battleship_place(
        k, size, s, _ptr(ships, torch.long, (s,)), _ptr(u, torch.float64, (k, s)),
        boards.data_ptr(),
    )  # fmt: skip
    _check(code, "battleship_place")
    return boards.view(torch.bool)


class Stepped(NamedTuple):
    """What a whole-step kernel (``cartpole_run``, ``battleship_run``) hands back: the step's
    reward [n] float32, terminated, truncated, done [n] bool, the episodes' returns [n] float32
    and lengths [n] int64 (valid where done), every copy's next observation, the last
    observation of each truncated episode (valid there; None where none was truncated), and how
    many episodes ended."""

    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    done: Tensor
    returns: Tensor
    lengths: Tensor
    obs: Tensor
    final_obs: Tensor | None
    ended: int


def _run(fn, n: int, obs: Tensor, final: Tensor, state: tuple, rest: tuple) -> Stepped:
    """Call whole-step kernel ``fn`` with the pointers ``state`` and the arguments ``rest``,
    then its outputs (reward, flags, returns, lengths), ``obs`` and the env's scratch of last
    observations ``final``. Its return: how many episodes ended, plus 2^32 for each truncated;
    negative where it refused (ValueError; -2: RuntimeError, a board without room)."""
    reward, returns = torch.empty(n), torch.empty(n)
    flags, lengths = torch.empty(3, n, dtype=torch.bool), torch.empty(n, dtype=torch.long)
    code = fn(*state, *rest, reward.data_ptr(), flags.data_ptr(), returns.data_ptr(),
              lengths.data_ptr(), obs.data_ptr(), final.data_ptr())  # fmt: skip
    if code < 0:
        if code == -2:
            raise RuntimeError("a new board finds no place for a ship")
        raise ValueError("actions out of range")
    ended, cut = code & 0xFFFFFFFF, code >> 32
    terminated, truncated, done = flags.unbind(0)
    final_obs = final.clone() if cut else None
    return Stepped(reward, terminated, truncated, done, returns, lengths, obs, final_obs, ended)


def _pool_pointers(env, name: str) -> tuple[int, int, int]:
    """Pool ``name`` of ``env`` (``TensorEnv._pool``): its data, size and position."""
    pool, at = env.state[name], env.state[name + "_at"]
    dtype = torch.float64 if name == "uniform" else torch.float32
    return _ptr(pool, dtype, (pool.numel(),)), pool.numel(), _ptr(at, torch.long, (1,))


def cartpole_run(env, actions: Tensor, bounds: Tensor | None) -> Stepped:
    """One step of a CartPole ``env``'s copies with its bookkeeping, the ended episodes'
    statistics, their copies' reset (where ``env.autoreset``) and every copy's next observation
    (``cartpole_run`` in native.c): actions [n] int64 in {0, 1}; bounds [4] float32 (the
    observation's low, then high) for a noisy env. ValueError for an action out of range."""
    st, n = env.state, env.num_envs
    noisy = bounds is not None
    state = (
        n, env.length, env.VIEW[0], int(env.autoreset),
        _ptr(st["physics"], torch.float64, (n, 4)), _ptr(st["t"], torch.long, (n,)),
        _ptr(actions, torch.long, (n,)), _ptr(st["episode_return"], torch.float32, (n,)),
        _ptr(st["episode_length"], torch.long, (n,)), *_pool_pointers(env, "uniform"),
    )  # fmt: skip
    if noisy:
        rest = (*_pool_pointers(env, "noise"), _ptr(st["obs_noise"], torch.float32, (n, 2)),
                _ptr(bounds, torch.float32, (4,)))  # fmt: skip
    else:
        rest = (None, 0, None, None, None)
    final = env.scratch(lambda: torch.empty(n, 2))
    try:
        return _run(_lib().cartpole_run, n, torch.empty(n, 2), final, state, rest)
    except ValueError:
        raise ValueError("actions out of range: valid actions are 0..1") from None


def concentration_step(env, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One turn of a Concentration ``env``'s copies (its state updated in place): reward [n]
    float32, terminated, truncated [n] bool."""
    st, n, c = env.state, env.num_envs, env.num_cards
    reward = torch.empty(n)
    ends = torch.empty(2, n, dtype=torch.uint8)
    code = _lib().concentration_step(
        n, c, env.facedown, env.length, 1.0 / (c // 2), -1.0 / env.length,
        _ptr(st["values"], torch.long, (n, c)), _ptr(st["board"], torch.long, (n, c)),
        _ptr(st["pairs"], torch.long, (n,)), _ptr(st["first"], torch.long, (n,)),
        _ptr(st["turned"], torch.long, (n, 2)), _ptr(st["t"], torch.long, (n,)),
        _ptr(actions, torch.long, (n,)), reward.data_ptr(), ends[0].data_ptr(),
        ends[1].data_ptr(),
    )  # fmt: skip
    _check(code, "concentration_step")
    ends = ends.view(torch.bool)
    return reward, ends[0], ends[1]


def concentration_observe(env) -> Tensor:
    """What a Concentration ``env``'s copies show: [n, cards] int64."""
    st, n, c = env.state, env.num_envs, env.num_cards
    obs = torch.empty(n, c, dtype=torch.long)
    code = _lib().concentration_observe(
        n, c, _ptr(st["values"], torch.long, (n, c)), _ptr(st["board"], torch.long, (n, c)),
        _ptr(st["turned"], torch.long, (n, 2)), obs.data_ptr(),
    )  # fmt: skip
    _check(code, "concentration_observe")
    return obs


def battleship_run(env, actions: Tensor, ships: Tensor) -> Stepped:
    """One shot of a Battleship ``env``'s copies with its bookkeeping, the ended episodes'
    statistics, their copies' new boards (where ``env.autoreset``; ships [s] int64) and every
    copy's next observation (``battleship_run`` in native.c): actions [n, 2] int64.
    ValueError for an action out of range."""
    st, n, s = env.state, env.num_envs, env.size
    state = (
        n, s, ships.numel(), _ptr(ships, torch.long, (ships.numel(),)), int(env.autoreset),
        env.hit_reward, env.miss_reward,
        _ptr(st["board"], torch.bool, (n, s, s)), _ptr(st["guessed"], torch.bool, (n, s, s)),
        _ptr(st["hits"], torch.long, (n,)), _ptr(st["shown"], torch.long, (n,)),
        _ptr(st["t"], torch.long, (n,)), _ptr(actions, torch.long, (n, 2)),
        _ptr(st["episode_return"], torch.float32, (n,)),
        _ptr(st["episode_length"], torch.long, (n,)), *_pool_pointers(env, "uniform"),
    )  # fmt: skip
    final = env.scratch(lambda: torch.empty(n, dtype=torch.long))
    obs = torch.empty(n, dtype=torch.long)
    try:
        return _run(_lib().battleship_run, n, obs, final, state, ())
    except ValueError:
        raise ValueError(
            f"actions out of range: valid actions are {env.single_action_space}"
        ) from None


def cardgame_step(env, game: int, scale: float, actions: Tensor, width: int):
    """One step of a card game ``env``'s copies (``cardgame_step`` in native.c; its state, and
    its episode returns and lengths, updated in place): reward [n] float32, terminated,
    truncated (never), done [n] bool, the next observations [n, width] int64 (valid where no
    episode ended) and how many episodes ended. ValueError for an action out of range."""
    st, n, c = env.state, env.num_envs, env.num_cards
    reward = torch.empty(n)
    flags = torch.empty(3, n, dtype=torch.bool)
    at = flags.data_ptr()
    obs = torch.empty(n, width, dtype=torch.long)
    query = st.get("query_order", st["order"])
    counts = st.get("counts")
    distinct = counts.shape[1] if counts is not None else 1
    ended = _lib().cardgame_step(
        game, n, c, getattr(env, "k", 1), distinct, env.num_actions, scale,
        _ptr(st["order"], torch.long, (n, c)), _ptr(query, torch.long, (n, c)),
        _ptr(counts, torch.long, (n, distinct)) if counts is not None else None,
        _ptr(st["t"], torch.long, (n,)), _ptr(actions, torch.long, (n,)), reward.data_ptr(),
        at, at + n, at + 2 * n, _ptr(st["episode_return"], torch.float32, (n,)),
        _ptr(st["episode_length"], torch.long, (n,)), obs.data_ptr(),
    )  # fmt: skip
    if ended < 0:
        raise ValueError(f"actions out of range: valid actions are 0..{env.num_actions - 1}")
    return (reward, *flags.unbind(0), obs, int(ended))


def step_bookkeeping(env, reward: Tensor, terminated: Tensor, truncated: Tensor):
    """A step's bookkeeping (``TensorEnv.step``'s) in one call: the episode returns and
    lengths of ``env`` grow by reward [n] float32 and 1; returns done [n] bool (terminated or
    truncated) and how many episodes ended."""
    st, n = env.state, env.num_envs
    done = torch.empty(n, dtype=torch.bool)
    ended = _lib().step_bookkeeping(
        n, _ptr(reward, torch.float32, (n,)),
        _ptr(terminated, torch.bool, (n,)), _ptr(truncated, torch.bool, (n,)),
        _ptr(st["episode_return"], torch.float32, (n,)),
        _ptr(st["episode_length"], torch.long, (n,)), done.data_ptr(),
    )  # fmt: skip
    return done, int(ended)


def bandit_step(env, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One pull of a MultiarmedBandit ``env``'s copies: reward [n] float32, terminated (never),
    truncated [n] bool."""
    st, n = env.state, env.num_envs
    reward = torch.empty(n)
    truncated = torch.empty(n, dtype=torch.bool)
    code = _lib().bandit_step(
        n, env.arms, env.length, _ptr(st["arms"], torch.float32, (n, env.arms)),
        _ptr(st["draws"], torch.float64, (n, env.length)), _ptr(st["t"], torch.long, (n,)),
        _ptr(st["shown"], torch.long, (n,)), _ptr(actions, torch.long, (n,)),
        reward.data_ptr(), truncated.data_ptr(),
    )  # fmt: skip
    _check(code, "bandit_step")
    return reward, torch.zeros_like(truncated), truncated


def minesweeper_lay(u: Tensor, height: int, width: int, mines: int) -> tuple[Tensor, Tensor]:
    """k MineSweeper boards from u [k, H W] float64: the mines [k, H, W] bool (a partial
    Fisher-Yates shuffle's last ``mines`` squares) and each square's count of mines in its
    3 x 3 block [k, H, W] int64."""
    k = u.shape[0]
    out = torch.empty(k, height, width, dtype=torch.uint8)
    counts = torch.empty(k, height, width, dtype=torch.long)
    code = _lib().minesweeper_lay(
        k, height, width, mines, _ptr(u, torch.float64, (k, height * width)), out.data_ptr(),
        counts.data_ptr(),
    )  # fmt: skip
    _check(code, "minesweeper_lay")
    return out.view(torch.bool), counts


def minesweeper_step(env, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One square uncovered in a MineSweeper ``env``'s copies, actions [n, 2]: reward [n]
    float32, terminated, truncated [n] bool."""
    st, n, h, w = env.state, env.num_envs, env.height, env.width
    reward = torch.empty(n)
    ends = torch.empty(2, n, dtype=torch.uint8)
    code = _lib().minesweeper_step(
        n, h, w, env.length, env.success, env.failure, env.repeat,
        _ptr(st["mines"].view(torch.uint8), torch.uint8, (n, h, w)),
        _ptr(st["viewed"].view(torch.uint8), torch.uint8, (n, h, w)),
        _ptr(st["counts"], torch.long, (n, h, w)), _ptr(st["t"], torch.long, (n,)),
        _ptr(st["shown"], torch.long, (n,)), _ptr(actions, torch.long, (n, 2)),
        reward.data_ptr(), ends[0].data_ptr(), ends[1].data_ptr(),
    )  # fmt: skip
    _check(code, "minesweeper_step")
    ends = ends.view(torch.bool)
    return reward, ends[0], ends[1]


def episode_ends(env, done: Tensor, truncated: Tensor) -> tuple[Tensor, Tensor, int]:
    """Where episodes ended (done [n] bool): ``env``'s episode returns [n] float32 and lengths
    [n] int64 copied out and zeroed there; returns the copies and how many of the ended
    episodes were truncated."""
    st, n = env.state, env.num_envs
    ret, length = torch.empty(n), torch.empty(n, dtype=torch.long)
    cut = _lib().episode_ends(
        n, _ptr(done, torch.bool, (n,)), _ptr(truncated, torch.bool, (n,)),
        _ptr(st["episode_return"], torch.float32, (n,)),
        _ptr(st["episode_length"], torch.long, (n,)), ret.data_ptr(), length.data_ptr(),
    )  # fmt: skip
    return ret, length, int(cut)


def pendulum_step(env, actions: Tensor, half: float) -> tuple[Tensor, Tensor, Tensor]:
    """One step of a Pendulum ``env``'s copies (physics [n, 2] float64 and t updated in
    place), actions [n, 1] float32 torques: reward [n] float32, terminated (never), truncated
    [n] bool; ``half`` is popgym's reward rescaling."""
    st, n = env.state, env.num_envs
    physics = st["physics"]
    at = _ptr(physics, torch.float64, (n, 2))
    sin = torch.sin(physics[:, 0])
    reward = torch.empty(n)
    truncated = torch.empty(n, dtype=torch.bool)
    code = _lib().pendulum_step(
        n, env.length, half, at, sin.data_ptr(), _ptr(actions, torch.float32, (n, 1)),
        _ptr(st["t"], torch.long, (n,)), reward.data_ptr(), truncated.data_ptr(),
    )  # fmt: skip
    _check(code, "pendulum_step")
    return reward, torch.zeros_like(truncated), truncated


_MATCH_STATS = ("success", "choice_reward", "apple_reward", "cue_seen", "success_seen",
                "success_unseen")  # fmt: skip


def _success_at(env) -> ctypes.Array:
    """The addresses of a Match env's success_at_{p} arrays (float32 [n] each), as a C array
    of k pointers (float *const *)."""
    n = env.num_envs
    at = [_ptr(env.state[f"success_at_{p}"], torch.float32, (n,)) for p in range(env.num_colours)]
    return (ctypes.c_void_p * len(at))(*at)


def match_deal(env, idx: Tensor, order, colours, cue, which, start) -> None:
    """New episodes in copies idx [m] int64 of a Match ``env`` from ``MatchEnv._deal``'s draws
    (``match_deal`` in native.c; as ``MatchEnv._torch_deal`` writes them)."""
    st, n, k, a = env.state, env.num_envs, env.num_colours, env.num_apples
    rows, cols = st["grid"].shape[1:]
    grid_shape, m = (n, rows, cols), idx.numel()
    starts = env._interior if env.active else env._passive_starts
    cells = env._cue_cells
    code = _lib().match_deal(
        n, rows, cols, k, a, cells.shape[0], starts.shape[0], 0.0 if env.active else 1.0,
        _ptr(env._cue_room, torch.uint8, (rows, cols)),
        _ptr(cells, torch.long, (cells.shape[0], 2)),
        _ptr(starts, torch.long, (starts.shape[0], 2)),
        m, _ptr(idx, torch.long, (m,)), _ptr(order, torch.long, (m, 49)),
        _ptr(colours, torch.long, (m, k)), _ptr(cue, torch.long, (m,)),
        _ptr(which, torch.long, (m,)), _ptr(start, torch.long, (m,)),
        _ptr(st["grid"], torch.uint8, grid_shape), _ptr(st["apple_timer"], torch.long, grid_shape),
        _ptr(st["pos"], torch.long, (n, 2)), _ptr(st["phase"], torch.long, (n,)),
        _ptr(st["t_phase"], torch.long, (n,)), _ptr(st["cue"], torch.long, (n,)),
        _ptr(st["cue_cell"], torch.long, (n, 2)), _ptr(st["cue_position"], torch.long, (n,)),
        _ptr(st["apples"], torch.long, (n, a)), _ptr(st["distractor_start"], torch.long, (n,)),
        _ptr(st["choice_order"], torch.long, (n, k)),
        *(_ptr(st[key], torch.float32, (n,)) for key in _MATCH_STATS), _success_at(env),
    )  # fmt: skip
    _check(code, "match_deal")


def match_step(env, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of a Passive or Active Match ``env``'s copies (``match_step`` in native.c; its
    state updated in place, as ``MatchEnv._torch_step`` does it): actions [n] int64 in 0..3.
    Returns reward [n] float32, terminated, truncated (never) [n] bool. ValueError for an
    action out of range (or a state that would index out of its canvas)."""
    st, n, k, a = env.state, env.num_envs, env.num_colours, env.num_apples
    rows, cols = st["grid"].shape[1:]
    grid_shape = (n, rows, cols)
    stats = [_ptr(st[key], torch.float32, (n,)) for key in _MATCH_STATS]
    reward = torch.empty(n)
    terminated = torch.empty(n, dtype=torch.bool)
    code = _lib().match_step(
        n, rows, cols, k, a, int(env.active), env.delay, env.cue_steps, env.choice_steps,
        env.apple_respawn, env.apple_reward, env.match_reward,
        _ptr(env._apple_room, torch.uint8, (rows, cols)),
        _ptr(env._choice_room, torch.uint8, (rows, cols)),
        _ptr(env._interior, torch.long, (49, 2)), _ptr(env._square_cells, torch.long, (k, 2)),
        _ptr(env._choice_start, torch.long, (2,)),
        _ptr(st["grid"], torch.uint8, grid_shape), _ptr(st["apple_timer"], torch.long, grid_shape),
        _ptr(st["pos"], torch.long, (n, 2)), _ptr(st["phase"], torch.long, (n,)),
        _ptr(st["t_phase"], torch.long, (n,)), _ptr(st["cue"], torch.long, (n,)),
        _ptr(st["cue_cell"], torch.long, (n, 2)), _ptr(st["cue_position"], torch.long, (n,)),
        _ptr(st["apples"], torch.long, (n, a)), _ptr(st["distractor_start"], torch.long, (n,)),
        _ptr(st["choice_order"], torch.long, (n, k)), *stats, _success_at(env),
        _ptr(actions, torch.long, (n,)), reward.data_ptr(), terminated.data_ptr(),
    )  # fmt: skip
    if code != 0:
        raise ValueError(
            "actions out of range (valid actions are 0..3), or a state whose agent or draws lie "
            "outside the canvas"
        )
    return reward, terminated, torch.zeros_like(terminated)


def grid_observe(env) -> Tensor:
    """The agent-centred 5x5 one-hot view of every copy of a grid task ``env`` (``GridEnv``'s
    ``_observe``): [n, 5, 5, channels] uint8."""
    st, n = env.state, env.num_envs
    rows, cols = st["grid"].shape[1:]
    image = torch.empty(n, 5, 5, env.num_channels, dtype=torch.uint8)
    code = _lib().grid_observe(
        n, rows, cols, env.num_channels, _ptr(st["grid"], torch.uint8, (n, rows, cols)),
        _ptr(st["pos"], torch.long, (n, 2)), image.data_ptr(),
    )  # fmt: skip
    _check(code, "grid_observe")
    return image


def memory_step(env, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of a Memory ``env``'s copies (``memory_step`` in native.c; its state updated
    in place, as ``MemoryEnv._torch_step`` does it): actions [n] int64 in 0..6. Returns reward
    [n] float32, terminated, truncated [n] bool. ValueError for an action out of range."""
    st, n = env.state, env.num_envs
    reward = torch.empty(n)
    flags = torch.empty(2, n, dtype=torch.bool)
    code = _lib().memory_step(
        n, env.size, env.max_steps,
        _ptr(st["world"], torch.int32, (n, env.size * env.size + 3)),
        _ptr(st["pos"], torch.long, (n, 2)), _ptr(st["dir"], torch.long, (n,)),
        _ptr(st["step_count"], torch.long, (n,)), _ptr(st["success_pos"], torch.long, (n, 2)),
        _ptr(st["failure_pos"], torch.long, (n, 2)), _ptr(st["success"], torch.float32, (n,)),
        _ptr(actions, torch.long, (n,)), reward.data_ptr(), flags[0].data_ptr(),
        flags[1].data_ptr(),
    )  # fmt: skip
    if code != 0:
        raise ValueError("actions out of range (valid actions are 0..6), or a state out of range")
    return reward, flags[0], flags[1]


def memory_observe(env) -> dict[str, Tensor]:
    """What every copy of a Memory ``env`` sees (``MemoryEnv._observe``): {"image": [n, 7, 7, 3]
    uint8, "direction": [n] int64}."""
    st, n, s = env.state, env.num_envs, env.size
    image = torch.empty(n, 7, 7, 3, dtype=torch.uint8)
    direction = torch.empty(n, dtype=torch.long)
    code = _lib().memory_observe(
        n, s, _ptr(env._lookup, torch.long, (s * s, 4, 7, 7)),
        _ptr(st["world"], torch.int32, (n, s * s + 3)), _ptr(st["pos"], torch.long, (n, 2)),
        _ptr(st["dir"], torch.long, (n,)), image.data_ptr(), direction.data_ptr(),
    )  # fmt: skip
    _check(code, "memory_observe")
    return {"image": image, "direction": direction}
