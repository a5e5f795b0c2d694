"""The actor-critic: encoder -> core (rlgate.cores) -> policy and value heads.

Only the core differs between runs. The encoder is chosen from the observation space
(``rlgate.agents.encoders``) and also takes the previous action and reward; the policy head
parameterises the action space's distribution (``rlgate.agents.distributions``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rlgate.agents import fused_step
from rlgate.agents.distributions import make_action_dist
from rlgate.agents.encoders import ObsEncoder
from rlgate.agents.seen import channels_in_view
from rlgate.cores import CORES, make_core
from rlgate.cores.base import reset_where


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
    """Encoder -> core -> (policy outputs, value).

    Args:
        obs_space: single observation space of the env.
        action_space: single action space of the env.
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
        policy_init_gain: orthogonal-init gain of the policy's last layer. 0.01 (CleanRL's) starts
            from a uniform policy, but it also scales by 0.01 every gradient the policy sends
            into the heads and the core, where the value head's (gain 1) drowns it; 1 lets
            the policy shape the features it needs from the start.
        observation_kinds: the kinds the env declares for its observation entries.
        view_pool: the encoder also maps the view's channel counts (``ObsEncoder``).
        seen_head: a linear head over the core output with one logit per view channel, for
            the seen-so-far auxiliary loss (``rlgate.agents.seen``; ``forward_seen``).
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        core: str,
        hidden_size: int = 128,
        encoder_size: int = 128,
        core_options: dict | None = None,
        head_size: int = 0,
        view_gate: bool = False,
        policy_init_gain: float = 0.01,
        observation_kinds: dict[str, str] | None = None,
        view_pool: bool = False,
        seen_head: bool = False,
    ):
        super().__init__()
        if view_gate and not head_size:
            raise ValueError("view_gate needs head_size > 0")
        self.action_dist = make_action_dist(action_space)
        # the backends that ask for the fastest path also map a minigrid view natively
        backend = (core_options or {}).get("backend", "auto")
        self.encoder = ObsEncoder(
            obs_space,
            self.action_dist.feature_size,
            encoder_size,
            observation_kinds,
            native_view=backend in ("auto", "fused", "native"),
        )
        if view_gate and not self.encoder.has_view:
            raise ValueError(
                "view-gate needs a grid view in the observation (the rlgate grid tasks, "
                "minigrid); this env has none"
            )
        self.core = make_core(core, encoder_size, hidden_size, **(core_options or {}))
        self.head_size = head_size
        self.view_gate = view_gate
        features = self.encoder.image_size if view_gate else encoder_size
        self.policy = _head(hidden_size, features, head_size, self.action_dist.param_size)
        self.value = _head(hidden_size, features, head_size, 1)
        # after both heads exist: the same random draws, in the same order, as before heads
        # could be MLPs (same seed, same initial parameters)
        _init_last(self.policy, gain=policy_init_gain)
        _init_last(self.value, gain=1.0)
        if view_gate:  # last, for the same reason
            self.gate = nn.Linear(hidden_size, self.encoder.channels)
        if view_pool:  # after the gate, likewise
            self.encoder.add_view_pool()
        self.seen: nn.Linear | None = None
        if seen_head:  # last of all, likewise
            if not self.encoder.has_view:
                raise ValueError(
                    "seen-loss needs a grid view in the observation (the rlgate grid tasks, "
                    "minigrid); this env has none"
                )
            self.seen = nn.Linear(hidden_size, self.encoder.channels)

    def initial_state(self, batch_size: int, device=None):
        return self.core.initial_state(batch_size, device)

    def first_inputs(self, num_envs: int, device=None) -> tuple[Tensor, Tensor]:
        """The previous action [N, *action shape] and reward [N] at an episode's first step:
        zeros."""
        dist = self.action_dist
        action = torch.zeros(num_envs, *dist.shape, dtype=dist.dtype, device=device)
        return action, torch.zeros(num_envs, device=device)

    @staticmethod
    def next_inputs(is_first: Tensor, action: Tensor, reward: Tensor) -> tuple[Tensor, Tensor]:
        """The next step's previous action and reward: this step's, and zeros where
        ``is_first`` [N] says a new episode starts."""
        return reset_where(is_first, 0, action), torch.where(is_first, 0.0, reward)

    def step(self, obs, prev_action, prev_reward, is_first, state):
        """One step for N envs: obs dict of [N, ...], prev_action [N, *action shape],
        prev_reward [N], is_first [N] -> (policy outputs [N, P], value [N], new core state).

        Without gradients (acting, evaluation) in one native call where it applies
        (``rlgate.agents.fused_step``), else, and with gradients, module by module."""
        if not torch.is_grad_enabled():
            fused = fused_step.for_model(self, obs, state)
            if fused is not None:
                return fused(self, obs, prev_action, prev_reward, is_first, state)
        return self.module_step(obs, prev_action, prev_reward, is_first, state)

    def module_step(self, obs, prev_action, prev_reward, is_first, state):
        """``step`` module by module: the reference of the native step."""
        params, value, state = self(
            {k: v[None] for k, v in obs.items()},
            prev_action[None],
            prev_reward[None],
            is_first[None],
            state,
        )
        return params[0], value[0], state

    def act(self, obs, prev_action, prev_reward, is_first, state, generator=None, greedy=False):
        """``step``, then an action sampled from the policy with ``generator`` (the most
        likely one where ``greedy``): (action, policy outputs, value, new core state)."""
        params, value, state = self.step(obs, prev_action, prev_reward, is_first, state)
        return self.action_dist.sample(params, generator, greedy), params, value, state

    def forward(self, obs, prev_action, prev_reward, is_first, state):
        """Run over an unroll.

        Args:
            obs: dict of [T, B, ...]; prev_action [T, B, *action shape]; prev_reward [T, B];
            is_first [T, B] bool (the core resets there); state: core state before step 0.

        Returns:
            (policy outputs [T, B, P] (the parameters of ``action_dist``), values [T, B],
            final core state).
        """
        params, values, state, _ = self._unroll(obs, prev_action, prev_reward, is_first, state)
        return params, values, state

    def forward_seen(self, obs, prev_action, prev_reward, is_first, state):
        """``forward``, plus the seen-so-far head's logits over the core output: (policy
        outputs, values, final core state, logits [T, B, channels]). Needs ``seen_head``."""
        if self.seen is None:
            raise RuntimeError("forward_seen needs a model built with seen_head")
        params, values, state, core_out = self._unroll(
            obs, prev_action, prev_reward, is_first, state
        )
        return params, values, state, self.seen(core_out)

    @torch.no_grad()
    def channels_in_view(self, obs) -> Tensor:
        """[T, B, channels] bool: the view's channel c is in some cell of the view at step t
        (obs dict of [T, B, ...]; the seen-so-far loss's input). Needs a grid view."""
        return channels_in_view(self.encoder.view(obs))

    def _unroll(self, obs, prev_action, prev_reward, is_first, state):
        """``forward``'s work: (policy outputs, values, final state, core output [T, B, H])."""
        hot_heads = self.view_gate and self._hot_heads()
        view = self.encoder.view(obs) if self.view_gate and not hot_heads else None
        x = self.encoder.embed(view, obs, self.action_dist.features(prev_action), prev_reward)
        core_out, state = self.core(x, state, is_first)
        if hot_heads:
            return (*self._gated_hot_heads(obs, core_out), state, core_out)
        y = core_out
        if self.view_gate:
            gate = torch.sigmoid(self.gate(y)).unsqueeze(-2)  # [T, B, 1, channels]
            y = torch.cat([y, (view * gate).flatten(-2)], dim=-1)
        elif self.head_size:
            y = torch.cat([y, x], dim=-1)
        heads = [*self.policy.modules(), *self.value.modules()]
        if self.head_size and not fused_step.forward_hooked(heads):
            return (*self._mlp_heads(y), state, core_out)
        return self.policy(y), self.value(y).squeeze(-1), state, core_out

    def _mlp_heads(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Both MLP heads over y [T, B, in] in two matmuls: the first layers stacked [2N, in],
        the last ones block-diagonal [P + 1, 2N]. The same function as running each head; it
        reads y once, and the backward sums their gradients for y inside one matmul instead
        of adding two [T, B, in] tensors (the heads' input is the widest tensor of a
        view-gate model; the native acting step packs the same weights). -> (policy outputs
        [T, B, P], values [T, B])."""
        w1, b1, w2, b2 = fused_step.stacked_heads(self.policy, self.value)
        return self._head_outputs(torch.tanh(F.linear(y, w1, b1)), w2, b2)

    @staticmethod
    def _head_outputs(units: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
        """The stacked heads after their first layer's units [T, B, 2N] (after the tanh): the
        block-diagonal last layer, split into (policy outputs [T, B, P], values [T, B])."""
        out = F.linear(units, w2, b2)
        return out[..., :-1], out[..., -1]

    def _hot_heads(self) -> bool:
        """Whether the view-gate heads run from the view's hot indices (``_gated_hot_heads``):
        where the encoder maps its view natively and no forward hook is on a head."""
        return self.encoder.native_applies(self.policy[0].weight) and not fused_step.forward_hooked(
            [*self.policy.modules(), *self.value.modules()]
        )

    def _gated_hot_heads(self, obs, core_out: Tensor) -> tuple[Tensor, Tensor]:
        """The view-gate MLP heads (``_mlp_heads`` over [core output, view * gate]) with the
        first layer split in two: a matmul over the core output, and the gated view's share
        summed from the view's hot indices (``ObsEncoder.hot_linear_act``; 25 of a
        PassiveMatch view's 150 features) instead of a matmul over the dense gated view, the
        tanh in the same pass. The same function up to the order of the float sums and
        native.c's tanh (within ~1e-7 of torch's). -> (policy outputs [T, B, P], values [T, B])."""
        gate = torch.sigmoid(self.gate(core_out))  # [T, B, channels]
        w1, b1, w2, b2 = fused_step.stacked_heads(self.policy, self.value)
        lead, hid = core_out.shape[:-1], core_out.shape[-1]
        # the core output's share as one [T B, 2N] matmul, then the gated view's read and the
        # tanh over it in place (one native pass)
        pre = torch.addmm(b1, core_out.reshape(-1, hid), w1[:, :hid].t())
        units = self.encoder.hot_linear_act(obs, pre, w1[:, hid:], gate.reshape(-1, gate.shape[-1]))
        return self._head_outputs(units.reshape(*lead, -1), w2, b2)

    @torch.no_grad()
    def unroll_gates(self, rollout, steps: int | None = None) -> list[dict[str, Tensor]]:
        """The core's gates ([B, H] each, see ``RecurrentCore.gates``) at each of the first
        ``steps`` steps (default: all) of a Rollout, replayed from its start state with its
        resets; {} at every step for the memoryless core."""
        steps = rollout.length if steps is None else steps
        x = self.core_features(
            {k: v[:steps] for k, v in rollout.obs.items()},
            rollout.prev_action[:steps],
            rollout.prev_reward[:steps],
        )
        init = self.initial_state(x.shape[1], x.device)
        state, out = rollout.states[0], []
        for t in range(steps):
            state = tuple(reset_where(rollout.is_first[t], s0, s) for s0, s in zip(init, state))
            out.append(self.core.gates(x[t], state))
            if t + 1 < steps:
                _, state = self.core.step(x[t], state)
        return out

    def core_features(self, obs, prev_action, prev_reward) -> Tensor:
        """The core's input, [T, B, encoder_size], from obs dict of [T, B, ...], prev_action
        [T, B, *action shape] and prev_reward [T, B] (for the gate diagnostics)."""
        return self.encoder.embed(None, obs, self.action_dist.features(prev_action), prev_reward)


def build_model(cfg, env) -> ActorCritic:
    """The actor-critic a TrainConfig describes, for a batched env (its spaces, the kinds it
    declares for its observation entries, its episode length for the chrono init)."""
    core_options: dict[str, Any] = {"backend": cfg.backend}
    if CORES[cfg.core].init == "chrono":
        if cfg.chrono_t_max is not None:  # validated by the config: > 2
            core_options["chrono_t_max"] = float(cfg.chrono_t_max)
        else:  # the env's episode length, however short: T_max must exceed 2
            t_max = getattr(env, "max_episode_steps", None) or 100.0
            core_options["chrono_t_max"] = max(float(t_max), 3.0)
    if CORES[cfg.core].master:
        core_options["chunk_size"] = cfg.chunk_size
    return ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        cfg.core,
        cfg.hidden_size,
        cfg.encoder_size,
        core_options,
        cfg.head_size,
        cfg.view_gate,
        cfg.policy_init_gain,
        getattr(env, "observation_kinds", None),
        cfg.view_pool,
        cfg.seen_loss > 0,
    )
