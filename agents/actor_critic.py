"""The actor-critic: encoder -> recurrent core (rlgate.cores) -> policy and value heads.

Only the core differs between runs. The encoder takes the observation plus the previous action
and reward (paper.md section 2): a one-hot grid view ("image" with values in {0, 1}, the
rlgate grid tasks) is flattened as it is; a minigrid view ("image" of (object, colour, state)
codes) is one-hot encoded per channel; "direction" is one-hot encoded.
"""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.cores import make_core

# minigrid's code ranges: objects 0..10, colours 0..5, states 0..2
MINIGRID_CODES = (11, 6, 3)


def _reward_feature(r: Tensor) -> Tensor:
    return torch.sign(r) * torch.log1p(r.abs())  # squashes the 10-point match reward


class ObsEncoder(nn.Module):
    """Observation + previous action and reward -> [.., out_size] features.

    One affine map of [image, one_hot(prev_action), f(prev_reward), one_hot(direction)] and a
    ReLU. A minigrid code image enters as the per-channel one-hot of its codes, written with one
    ``scatter_`` (a dense matmul beats ``embedding_bag``'s CPU backward here).

    Args:
        space: the env's single observation space (a Dict with "image" and maybe "direction").
        num_actions: size of the discrete action space.
        out_size: feature size.
    """

    def __init__(self, space: gym.spaces.Dict, num_actions: int, out_size: int):
        super().__init__()
        image = space["image"]
        self.binary = bool((image.high == 1).all())
        if not self.binary and image.shape[-1] != len(MINIGRID_CODES):
            raise ValueError(f"unsupported image observation {image}")
        cells = int(image.shape[0] * image.shape[1])
        self.cells = cells
        self.has_direction = "direction" in space.spaces
        self.num_actions = num_actions
        extra = num_actions + 1 + (4 if self.has_direction else 0)
        if self.binary:
            image_size = cells * int(image.shape[-1])
        else:
            image_size = cells * sum(MINIGRID_CODES)
            offsets = torch.tensor([0, MINIGRID_CODES[0], MINIGRID_CODES[0] + MINIGRID_CODES[1]])
            base = torch.arange(cells)[:, None] * sum(MINIGRID_CODES) + offsets  # [cells, 3]
            self.register_buffer("_rows", base, persistent=False)
        self.image_size = image_size
        self.channels = image_size // cells
        self.image = nn.Linear(image_size, out_size, bias=False)
        self.extra = nn.Linear(extra, out_size)
        bound = 1.0 / (image_size + extra) ** 0.5  # nn.Linear's init over the whole input
        for w in (self.image.weight, self.extra.weight, self.extra.bias):
            nn.init.uniform_(w, -bound, bound)

    def view(self, obs: dict[str, Tensor]) -> Tensor:
        """The view as per-cell one-hot channels: [T, B, cells, channels] float (the grid's
        own channels, or the one-hot of minigrid's object, colour and state codes)."""
        image = obs["image"]
        lead = image.shape[:2]
        if self.binary:
            return image.reshape(*lead, self.cells, -1).float()
        rows = self._rows + image.long().reshape(*lead, -1, len(MINIGRID_CODES))
        one_hot = torch.zeros(*lead, self.image_size, device=image.device)
        one_hot.scatter_(-1, rows.reshape(*lead, -1), 1.0)
        return one_hot.reshape(*lead, self.cells, -1)

    def embed(
        self, view: Tensor, obs: dict[str, Tensor], prev_action: Tensor, prev_reward: Tensor
    ) -> Tensor:
        """``view`` (from ``view(obs)``), the rest of obs, prev_action and prev_reward [T, B]
        -> [T, B, out_size]."""
        x = self.image(view.flatten(-2))
        feats = [
            F.one_hot(prev_action, self.num_actions).float(),
            _reward_feature(prev_reward).unsqueeze(-1),
        ]
        if self.has_direction:
            feats.append(F.one_hot(obs["direction"].long(), 4).float())
        return torch.relu(x + self.extra(torch.cat(feats, dim=-1)))

    def forward(self, obs: dict[str, Tensor], prev_action: Tensor, prev_reward: Tensor) -> Tensor:
        """obs: [T, B, ...] tensors; prev_action, prev_reward: [T, B] -> [T, B, out_size]."""
        return self.embed(self.view(obs), obs, prev_action, prev_reward)


def _head(hidden: int, features: int, width: int, out: int) -> nn.Module:
    """A linear head over the core output (width 0), or an MLP over [core output, features]."""
    if not width:
        return nn.Linear(hidden, out)
    first = nn.Linear(hidden + features, width)
    nn.init.orthogonal_(first.weight, gain=2**0.5)
    nn.init.zeros_(first.bias)
    return nn.Sequential(first, nn.Tanh(), nn.Linear(width, out))


def _init_last(head: nn.Module, gain: float) -> None:
    last = head if isinstance(head, nn.Linear) else head[-1]
    nn.init.orthogonal_(last.weight, gain=gain)
    nn.init.zeros_(last.bias)


class ActorCritic(nn.Module):
    """Encoder -> core -> (policy logits, value).

    Args:
        obs_space: single observation space of the env.
        num_actions: number of discrete actions.
        core: a key of rlgate.cores.CORES.
        hidden_size: core size H.
        encoder_size: feature size fed to the core.
        core_options: passed to ``make_core`` (backend, chrono_t_max, ...).
        head_size: 0 for linear policy and value heads over the core output; N > 0 for heads
            with one tanh layer of N units over [core output, encoder features], which can
            combine what the core remembers with what the agent sees now (the Match tasks'
            choice is such a conjunction).
        view_gate: gated-attention heads (Chaplot et al. 2018): the core output gates the
            view's channels, one sigmoid per channel shared by every cell, and the heads see
            [core output, gated view] instead of [core output, encoder features]. "Where is
            the colour I remember" becomes a gate on the colour channels followed by a read of
            where the gated cells are, instead of a conjunction the head's units must each
            discover. The heads see the view only through the gate: with the ungated features
            beside it the gate was just one more code for the cue, and one (colour, position)
            case could stay unlearned. Needs head_size > 0.
        policy_gain: orthogonal-init gain of the policy's last layer. 0.01 (CleanRL's) starts
            from a uniform policy, but it also scales by 0.01 every gradient the policy sends
            into the heads and the core, where the value head's (gain 1) drowns it; 1 lets
            the policy shape the features it needs from the start.
    """

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        num_actions: int,
        core: str,
        hidden_size: int = 128,
        encoder_size: int = 128,
        core_options: dict | None = None,
        head_size: int = 0,
        view_gate: bool = False,
        policy_gain: float = 0.01,
    ):
        super().__init__()
        if view_gate and not head_size:
            raise ValueError("view_gate needs head_size > 0")
        self.encoder = ObsEncoder(obs_space, num_actions, encoder_size)
        self.core = make_core(core, encoder_size, hidden_size, **(core_options or {}))
        self.head_size = head_size
        self.view_gate = view_gate
        features = self.encoder.image_size if view_gate else encoder_size
        self.policy = _head(hidden_size, features, head_size, num_actions)
        self.value = _head(hidden_size, features, head_size, 1)
        # after both heads exist: the same random draws, in the same order, as before heads
        # could be MLPs (same seed, same initial parameters)
        _init_last(self.policy, gain=policy_gain)
        _init_last(self.value, gain=1.0)
        if view_gate:  # last, for the same reason
            self.gate = nn.Linear(hidden_size, self.encoder.channels)

    def initial_state(self, batch_size: int, device=None):
        return self.core.initial_state(batch_size, device)

    def forward(self, obs, prev_action, prev_reward, is_first, state):
        """Run over an unroll.

        Args:
            obs: dict of [T, B, ...]; prev_action [T, B] long; prev_reward [T, B];
            is_first [T, B] bool (the core resets there); state: core state before step 0.

        Returns:
            (logits [T, B, A], values [T, B], final core state).
        """
        view = self.encoder.view(obs)
        x = self.encoder.embed(view, obs, prev_action, prev_reward)
        y, state = self.core(x, state, is_first)
        if self.view_gate:
            gate = torch.sigmoid(self.gate(y)).unsqueeze(-2)  # [T, B, 1, channels]
            y = torch.cat([y, (view * gate).flatten(-2)], dim=-1)
        elif self.head_size:
            y = torch.cat([y, x], dim=-1)
        return self.policy(y), self.value(y).squeeze(-1), state

    def core_features(self, obs, prev_action, prev_reward) -> Tensor:
        """Encoder output for one step, [B, encoder_size] (for gate diagnostics)."""
        return self.encoder(obs, prev_action, prev_reward)
