"""Batched rollouts on the device: N envs and the policy step together, no per-env loop.

Storage is time-major ([T, B, ...]) with ``is_first`` and the core state at the start of the
unroll (and at every ``chunk`` steps, for truncated BPTT). Observations hold T + 1 steps: the
last is where the next unroll starts, used for the bootstrap value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlgate.agents.actor_critic import ActorCritic


@dataclass
class Rollout:
    """One unroll of N envs, time-major.

    obs: dict of [T + 1, B, ...]; prev_action, prev_reward, is_first: [T + 1, B];
    actions, logp (behaviour log-prob), values, rewards, dones: [T, B];
    states: core states at steps 0, chunk, 2 * chunk, ... (tuples of [B, H]);
    bootstrap_value: V(x_T) under the acting parameters, [B];
    param_version: learner update count of the parameters that acted.
    """

    obs: dict[str, Tensor]
    prev_action: Tensor
    prev_reward: Tensor
    is_first: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    rewards: Tensor
    dones: Tensor
    states: list[tuple[Tensor, ...]]
    bootstrap_value: Tensor
    param_version: int = 0

    @property
    def length(self) -> int:
        return self.actions.shape[0]


@dataclass
class EpisodeLog:
    """Statistics of the episodes that finished during a rollout (1-D tensors, CPU)."""

    stats: dict[str, Tensor]

    @property
    def count(self) -> int:
        return int(self.stats["return"].numel()) if self.stats else 0


def pick_actions(probs: Tensor, greedy: bool, generator: torch.Generator | None) -> Tensor:
    """One action per row of probs [B, A]: the most likely (greedy), or sampled -> [B]."""
    if greedy:
        return probs.argmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class RolloutWorker:
    """Steps ``env`` with ``model`` and fills Rollouts of ``length`` steps.

    Args:
        env: a batched env from rlgate.envs.make_vec.
        model: the actor-critic (its parameters may be a lagged copy, for IMPALA actors).
        length: unroll length T.
        chunk: store the core state every ``chunk`` steps (divides T).
        generator: RNG for sampling actions.
        greedy: take the most likely action instead of sampling (evaluation).
    """

    def __init__(
        self,
        env,
        model: ActorCritic,
        length: int,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ):
        self.env, self.model, self.length = env, model, length
        self.chunk = chunk or length
        self.greedy = greedy
        self.generator = generator
        self.device = env.device
        obs, info = env.reset()
        n = env.num_envs
        self.obs = obs
        self.is_first = info["is_first"]
        self.prev_action = torch.zeros(n, dtype=torch.long, device=self.device)
        self.prev_reward = torch.zeros(n, device=self.device)
        self.state = model.initial_state(n, self.device)

    @torch.no_grad()
    def collect(self, param_version: int = 0) -> tuple[Rollout, EpisodeLog]:
        t_len, n, dev = self.length, self.env.num_envs, self.device
        obs_buf = {
            k: torch.empty((t_len + 1, *v.shape), dtype=v.dtype, device=dev)
            for k, v in self.obs.items()
        }
        prev_a = torch.empty(t_len + 1, n, dtype=torch.long, device=dev)
        prev_r = torch.empty(t_len + 1, n, device=dev)
        first = torch.empty(t_len + 1, n, dtype=torch.bool, device=dev)
        actions = torch.empty(t_len, n, dtype=torch.long, device=dev)
        logp = torch.empty(t_len, n, device=dev)
        values = torch.empty(t_len, n, device=dev)
        rewards = torch.empty(t_len, n, device=dev)
        dones = torch.empty(t_len, n, dtype=torch.bool, device=dev)
        states, finished = [], []
        for t in range(t_len + 1):
            for k, v in self.obs.items():
                obs_buf[k][t] = v
            prev_a[t], prev_r[t], first[t] = self.prev_action, self.prev_reward, self.is_first
            step_in = (
                {k: v.unsqueeze(0) for k, v in self.obs.items()},
                self.prev_action.unsqueeze(0),
                self.prev_reward.unsqueeze(0),
                self.is_first.unsqueeze(0),
            )
            if t == t_len:  # the next unroll starts here: only its value is needed now
                bootstrap = self.model(*step_in, self.state)[1][0]
                break
            if t % self.chunk == 0:
                states.append(tuple(s.clone() for s in self.state))
            logits, value, self.state = self.model(*step_in, self.state)
            probs = torch.softmax(logits[0], dim=-1)
            action = pick_actions(probs, self.greedy, self.generator)
            actions[t] = action
            logp[t] = torch.log(probs.gather(1, action[:, None]).squeeze(1).clamp_min(1e-12))
            values[t] = value[0]
            self.obs, reward, _, _, info = self.env.step(action)
            done = info["done"]
            rewards[t], dones[t] = reward, done
            self.is_first = info["is_first"]
            # previous action and reward start over with each episode
            self.prev_action = torch.where(self.is_first, 0, action)
            self.prev_reward = torch.where(self.is_first, 0.0, reward)
            if bool(done.any()):
                finished.append({k: v[done].cpu() for k, v in info["episode"].items()})
        stats = {}
        if finished:
            stats = {k: torch.cat([f[k] for f in finished]).float() for k in finished[0]}
        rollout = Rollout(
            obs_buf,
            prev_a,
            prev_r,
            first,
            actions,
            logp,
            values,
            rewards,
            dones,
            states,
            bootstrap,
            param_version,
        )
        return rollout, EpisodeLog(stats)
