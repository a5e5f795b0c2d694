"""Observation encoders, chosen from the env's single observation space.

Each leaf of the space (``rlgate.envs.spaces.flatten_space``) gets the encoder of its kind,
from the registry ``LEAF_ENCODERS``:

| kind        | space                                          | features                        |
|-------------|------------------------------------------------|---------------------------------|
| ``discrete``  | Discrete(n)                                  | one-hot, n                      |
| ``multi_discrete`` | MultiDiscrete(nvec)                     | concatenated one-hots, sum(nvec)|
| ``multi_binary`` | MultiBinary(n)                            | the bits as they are            |
| ``vector``    | Box that is not an image (any rank)          | flattened                       |
| ``image``     | Box image (``image_layout``)                 | IMPALA-style CNN                |
| ``grid``      | a one-hot grid view the env declares          | flattened per-cell channels    |
| ``minigrid``  | minigrid's (object, colour, state) code image | per-channel one-hot of the codes|

The kind of a leaf is what the env declares for it (``observation_kinds``: the rlgate grid
tasks declare "grid", minigrid's envs "minigrid"), else the one its space implies. The
features of every leaf, the previous action's (``ActionDist.features``) and the previous
reward's are concatenated and mapped by one affine layer and a ReLU to the core's input
(a one-hidden-layer MLP over a vector observation). A grid or minigrid view keeps its own
bias-free affine map, so that the view gate can read it per cell (``ObsEncoder.view``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.agents import onehot
from rlgate.envs.spaces import flatten_space

# minigrid's code ranges: objects 0..10, colours 0..5, states 0..2
MINIGRID_CODES = (11, 6, 3)
#: the kinds an env may declare for a leaf (``observation_kinds``)
DECLARED_KINDS = ("grid", "minigrid")


def reward_feature(r: Tensor) -> Tensor:
    """sign(r) log(1 + |r|): keeps the sign and order of rewards of any scale."""
    return torch.sign(r) * torch.log1p(r.abs())


def image_layout(space: gym.Space) -> str | None:
    """ "hwc" or "chw" for a Box that is an image, None for any other space.

    A Box is an image when it has rank 3 and is uint8 (0..255) or has the bounds [0, 1] or
    [0, 255]. The channel axis is the last when it has at most 4 entries and the first has
    more, the first when it has at most 4 and the last more, and the last otherwise
    (gymnasium's H x W x C convention).
    """
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        return None
    low, high = np.unique(space.low), np.unique(space.high)
    bounded = len(low) == 1 and len(high) == 1 and low[0] == 0 and high[0] in (1, 255)
    if not (space.dtype == np.uint8 or bounded):
        return None
    first, last = space.shape[0], space.shape[-1]
    if first <= 4 < last:
        return "chw"
    return "hwc"


def leaf_kind(space: gym.Space, declared: str | None = None) -> str:
    """The encoder kind of one observation leaf (see the module docstring)."""
    if declared is not None:
        if declared not in DECLARED_KINDS:
            raise ValueError(f"unknown observation kind {declared!r}; valid: {DECLARED_KINDS}")
        return declared
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(space, gym.spaces.MultiDiscrete):
        return "multi_discrete"
    if isinstance(space, gym.spaces.MultiBinary):
        return "multi_binary"
    return "image" if image_layout(space) else "vector"


def multi_one_hot(x: Tensor, offsets: Tensor, size: int) -> Tensor:
    """Integers [.., K] (entry k in 0..n_k-1) -> [.., size]: the one-hots of the K entries side
    by side, entry k's at ``offsets[k]``, written with one ``scatter_``."""
    out = torch.zeros(*x.shape[:-1], size, device=x.device)
    return out.scatter_(-1, x + offsets, 1.0)


class OneHot(nn.Module):
    """Discrete(n, start): [..] integers -> [.., n] one-hot."""

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__()
        self.n, self.start = int(space.n), int(space.start)
        self.size = self.n

    def forward(self, x: Tensor) -> Tensor:
        return F.one_hot(x.long() - self.start, self.n).float()


class MultiOneHot(nn.Module):
    """MultiDiscrete(nvec, start): [.., *nvec.shape] integers -> [.., sum(nvec)], the one-hots
    of the entries side by side (one scatter)."""

    def __init__(self, space: gym.spaces.MultiDiscrete):
        super().__init__()
        nvec = torch.as_tensor(np.asarray(space.nvec).reshape(-1), dtype=torch.long)
        start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.long)
        self.size = int(nvec.sum())
        self.entries = int(nvec.numel())
        offsets = torch.cumsum(nvec, 0) - nvec
        self.register_buffer("_offsets", offsets - start, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        entries = x.reshape(*x.shape[:2], self.entries).long()  # observations are [T, B, ...]
        return multi_one_hot(entries, self._offsets, self.size)


class Flatten(nn.Module):
    """Box or MultiBinary: [T, B, ...] -> [T, B, prod(shape)] float."""

    def __init__(self, space: gym.Space):
        super().__init__()
        self.size = int(np.prod(space.shape))

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:2], self.size).float()


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """An image Box -> [T, B, features]: the IMPALA network's stack (Espeholt et al. 2018),
    with one residual block per stage instead of two (a laptop-sized network): for each of
    16, 32, 32 channels, a 3x3 convolution, a 3x3 max-pool of stride 2 and a residual block;
    then a ReLU and a flatten. uint8 images are scaled to [0, 1], float images by their
    upper bound; channel-last images are moved to channel-first."""

    CHANNELS = (16, 32, 32)

    def __init__(self, space: gym.spaces.Box):
        super().__init__()
        self.layout = image_layout(space)
        if self.layout is None:
            raise ValueError(f"{space} is not an image")
        shape = space.shape if self.layout == "chw" else (space.shape[2], *space.shape[:2])
        self.scale = 1.0 / float(np.max(space.high)) if space.dtype != np.uint8 else 1 / 255.0
        layers: list[nn.Module] = []
        channels = shape[0]
        for out in self.CHANNELS:
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                _Residual(out),
            ]
            channels = out
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            self.size = int(self.net(torch.zeros(1, *shape)).shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:2]
        x = x.reshape(-1, *x.shape[2:]).float() * self.scale
        if self.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        return self.net(x).reshape(*lead, self.size)


class GridView(nn.Module):
    """A one-hot grid view [.., H, W, C] in {0, 1} -> per-cell channels [.., H * W, C]."""

    def __init__(self, space: gym.spaces.Box):
        super().__init__()
        if len(space.shape) != 3:
            raise ValueError(f"a grid view is [H, W, channels], got {space}")
        self.cells = int(space.shape[0] * space.shape[1])
        self.channels = int(space.shape[2])
        self.size = self.cells * self.channels

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:2], self.cells, self.channels).float()

    def flat(self, x: Tensor) -> Tensor:
        """[T, B, H, W, C] -> [T, B, H * W * C], as it is (the native map's grid)."""
        return x.reshape(*x.shape[:2], self.size)

    def counts(self, x: Tensor) -> Tensor:
        """[T, B, C] float: each channel's sum over the cells."""
        return x.reshape(*x.shape[:2], self.cells, self.channels).sum(-2, dtype=torch.float32)


class MinigridView(nn.Module):
    """minigrid's code image [.., H, W, 3] -> [.., H * W, 20]: per cell the one-hots of its
    object, colour and state codes, written with one ``scatter_`` (a dense matmul after it
    beats ``embedding_bag``'s CPU backward here)."""

    def __init__(self, space: gym.spaces.Box):
        super().__init__()
        if len(space.shape) != 3 or space.shape[-1] != len(MINIGRID_CODES):
            raise ValueError(f"a minigrid view is [H, W, 3] codes, got {space}")
        self.cells = int(space.shape[0] * space.shape[1])
        self.channels = sum(MINIGRID_CODES)
        self.size = self.cells * self.channels
        offsets = torch.tensor([0, MINIGRID_CODES[0], MINIGRID_CODES[0] + MINIGRID_CODES[1]])
        base = torch.arange(self.cells)[:, None] * self.channels + offsets  # [cells, 3]
        self.register_buffer("_rows", base, persistent=False)

    @property
    def base(self) -> Tensor:
        """[H * W * 3] int64: where each code's one-hot starts among the flattened H * W * 20
        features (code k of cell c at c * 20 + its offset; distinct ranges)."""
        return self._rows.reshape(-1)

    def codes(self, x: Tensor) -> Tensor:
        """[T, B, H, W, 3] codes -> [T, B, H * W * 3], in ``base``'s order."""
        return x.reshape(*x.shape[:2], -1)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:2]
        rows = self._rows + x.long().reshape(*lead, -1, len(MINIGRID_CODES))
        one_hot = torch.zeros(*lead, self.size, device=x.device)
        one_hot.scatter_(-1, rows.reshape(*lead, -1), 1.0)
        return one_hot.reshape(*lead, self.cells, self.channels)

    def counts(self, x: Tensor) -> Tensor:
        """[T, B, 20] float: each channel's sum over the cells."""
        return self(x).sum(-2)


#: kind -> encoder class (each takes the leaf's space and has ``size`` features)
LEAF_ENCODERS: dict[str, type[nn.Module]] = {
    "discrete": OneHot,
    "multi_discrete": MultiOneHot,
    "multi_binary": Flatten,
    "vector": Flatten,
    "image": ImpalaCNN,
    "grid": GridView,
    "minigrid": MinigridView,
}
VIEW_KINDS = ("grid", "minigrid")


class ObsEncoder(nn.Module):
    """Observation + previous action and reward -> [T, B, out_size] features.

    ``relu(view_map(view) + extra([action features, f(prev reward), other leaves]))``: the
    first grid or minigrid leaf is the view (bias-free map); every other leaf's features go
    into one affine map with the previous action's and reward's. After ``add_view_pool`` the
    view's channel counts (its per-cell channels summed over the cells) get a bias-free map of
    their own, added in: what is in view, wherever it stands.

    Args:
        space: the env's single observation space.
        action_features: size of the previous action's features (``ActionDist.feature_size``).
        out_size: feature size.
        declared: the kinds the env declares per leaf path (``observation_kinds``).
        native_view: map a minigrid view, or a uint8 grid view, from its hot indices
            (``rlgate.agents.onehot``) where the native kernels run (float32 on the CPU),
            instead of building its one-hot or float copy; the core's backend decides
            (``ActorCritic``).
    """

    def __init__(
        self,
        space: gym.Space,
        action_features: int,
        out_size: int,
        declared: dict[str, str] | None = None,
        native_view: bool = False,
    ):
        super().__init__()
        declared = dict(declared or {})
        leaves = flatten_space(space)
        unknown = sorted(set(declared) - set(leaves))
        if unknown:
            raise ValueError(f"declared observation kinds for missing entries {unknown}")
        self.kinds = {path: leaf_kind(sub, declared.get(path)) for path, sub in leaves.items()}
        self.view_key = next((p for p, k in self.kinds.items() if k in VIEW_KINDS), None)
        self.leaves = nn.ModuleDict(
            {_key(p): LEAF_ENCODERS[k](leaves[p]) for p, k in self.kinds.items()}
        )
        self.rest = [p for p in self.kinds if p != self.view_key]
        extra = action_features + 1 + sum(self.leaves[_key(p)].size for p in self.rest)
        if self.view_key is not None:
            view = self.leaves[_key(self.view_key)]
            self.cells, self.channels, self.image_size = view.cells, view.channels, view.size
            self.image = nn.Linear(view.size, out_size, bias=False)
        else:
            self.cells = self.channels = self.image_size = 0
            self.image = None
        self.extra = nn.Linear(extra, out_size)
        view_kind = self.kinds.get(self.view_key)
        self.native_view = native_view and (
            view_kind == "minigrid"
            or (view_kind == "grid" and leaves[self.view_key].dtype == np.uint8)
        )
        bound = 1.0 / (self.image_size + extra) ** 0.5  # nn.Linear's init over the whole input
        weights = [self.extra.weight, self.extra.bias]
        if self.image is not None:
            weights.insert(0, self.image.weight)
        for w in weights:
            nn.init.uniform_(w, -bound, bound)
        self.out_size = out_size
        self.pool: nn.Linear | None = None

    def add_view_pool(self) -> None:
        """Add the map of the view's channel counts (``--view-pool``); a model adds it after
        its other layers, so that they draw the same initial weights with or without it."""
        if self.view_key is None:
            raise ValueError(
                "view-pool needs a grid view in the observation (the rlgate grid tasks, "
                "minigrid); this env has none"
            )
        self.pool = nn.Linear(self.channels, self.out_size, bias=False)

    @property
    def has_view(self) -> bool:
        return self.view_key is not None

    def view(self, obs: dict[str, Tensor]) -> Tensor | None:
        """The view as per-cell channels, [T, B, cells, channels] float (None without one)."""
        if self.view_key is None:
            return None
        return self.leaves[_key(self.view_key)](obs[self.view_key])

    def embed(
        self, view: Tensor | None, obs: dict[str, Tensor], action_feats: Tensor, prev_reward: Tensor
    ) -> Tensor:
        """``view`` (from ``view(obs)``, or None to map it from obs), the other leaves of obs,
        the previous action's features [T, B, F] and the previous reward [T, B] ->
        [T, B, out_size]."""
        inp = self.extra_input(obs, action_feats, prev_reward)
        native = (
            self.view_key is not None and view is None and self.native_applies(self.image.weight)
        )
        if native and self.kinds[self.view_key] == "grid":
            # from a grid's hot entries, without its float view: the other inputs' share as a
            # [T B, E] tensor of its own, then the view's read and the ReLU over it in one
            # native pass over each row (codes keep the one-hot kernel blocked for the cache)
            lead = inp.shape[:-1]
            pre = self.extra(inp.reshape(-1, inp.shape[-1]))
            if self.pool is not None:
                counts = self.leaves[_key(self.view_key)].counts(obs[self.view_key])
                pre = pre + self.pool(counts.reshape(-1, counts.shape[-1]))
            return self.hot_linear_act(obs, pre, self.image.weight, act="relu").reshape(*lead, -1)
        x = self.extra(inp)
        if self.view_key is None:
            return torch.relu(x)
        if native:  # from the codes' hot indices, without their one-hot
            x = x + self.hot_linear(obs, self.image.weight)
            if self.pool is not None:
                x = x + self.pool(self.leaves[_key(self.view_key)].counts(obs[self.view_key]))
            return torch.relu(x)
        if view is None:
            view = self.view(obs)
        x = x + self.image(view.flatten(-2))
        if self.pool is not None:
            x = x + self.pool(view.sum(dim=-2))
        return torch.relu(x)

    def extra_input(
        self, obs: dict[str, Tensor], action_feats: Tensor, prev_reward: Tensor
    ) -> Tensor:
        """The input of the affine map ``extra``, [T, B, extra.in_features]: the previous
        action's features [T, B, F], f(previous reward) [T, B] and the features of every leaf
        but the view, side by side."""
        feats = [action_feats, reward_feature(prev_reward).unsqueeze(-1)]
        feats += [self.leaves[_key(p)](obs[p]) for p in self.rest]
        return torch.cat(feats, dim=-1)

    def native_applies(self, weight: Tensor) -> bool:
        """Whether ``hot_linear`` runs with this weight (``native_view``, and the native
        kernels take it)."""
        return self.native_view and onehot.native_applies(weight)

    def hot_linear(
        self, obs: dict[str, Tensor], weight: Tensor, gate: Tensor | None = None
    ) -> Tensor:
        """The view's per-cell channels, each times its channel's gate [T, B, channels]
        (none: 1), flattened and times weight^T [D, cells * channels] -> [T, B, D], from the
        view's hot indices alone (``native_applies`` must hold)."""
        flat, base = self._hot_view(obs)
        if base is not None and gate is None:  # the kernel blocked for the table's cache lines
            return onehot.one_hot_linear(flat, base, weight)
        return onehot.view_linear(flat, base, weight, gate)

    def _hot_view(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """The view as the native maps read it: (a grid's flat entries, None) or (codes,
        their base)."""
        raw = obs[self.view_key]
        leaf = self.leaves[_key(self.view_key)]
        if self.kinds[self.view_key] == "grid":
            return leaf.flat(raw), None
        return leaf.codes(raw), leaf.base

    def hot_linear_act(
        self,
        obs: dict[str, Tensor],
        pre: Tensor,
        weight: Tensor,
        gate: Tensor | None = None,
        act: str = "tanh",
    ) -> Tensor:
        """act(pre + ``hot_linear(obs, weight, gate)``) with pre [T B, D] (contiguous float32,
        written over) -> [T B, D]: a layer over the view and other inputs in one native pass
        (``onehot.view_linear_act``; ``native_applies`` must hold)."""
        flat, base = self._hot_view(obs)
        rows = flat.reshape(pre.shape[0], -1)
        return onehot.view_linear_act(pre, rows, base, weight, gate, act)


def _key(path: str) -> str:
    """A ModuleDict key for a leaf path ("." is not allowed in module names)."""
    return "leaf_" + path.replace(".", "__")
