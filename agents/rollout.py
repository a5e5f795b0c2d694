"""Batched rollouts on the device: N envs and the policy step together, no per-env loop.

Storage is time-major ([T, B, ...]) with ``is_first`` and the core state at the start of the
unroll (and at every ``chunk`` steps, for truncated BPTT). Observations hold T + 1 steps: the
last is where the next unroll starts, used for the bootstrap value. Where a time limit
truncated an episode, the value of its final observation (before the same-step reset), from
the core state before the reset, is stored too: the returns bootstrap from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlgate.agents.actor_critic import ActorCritic
from rlgate.agents.novelty import EpisodicNovelty
from rlgate.returns import next_state_values


@dataclass
class Rollout:
    """One unroll of N envs, time-major.

    obs: dict of [T + 1, B, ...]; prev_action [T + 1, B, *action shape]; prev_reward,
    is_first: [T + 1, B]; actions [T, B, *action shape] (the policy's samples, unclipped);
    logp (behaviour log-prob), values, rewards (the env's, plus the novelty bonus where one is
    paid), terminated, truncated: [T, B];
    final_values: V(final observation) where truncated, else 0, [T, B];
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
    terminated: Tensor
    truncated: Tensor
    final_values: Tensor
    states: list[tuple[Tensor, ...]]
    bootstrap_value: Tensor
    param_version: int = 0

    @property
    def length(self) -> int:
        return self.actions.shape[0]

    @property
    def dones(self) -> Tensor:
        """[T, B]: the episode ended at step t (either way)."""
        return self.terminated | self.truncated

    def next_values(self, values: Tensor | None = None, bootstrap: Tensor | None = None) -> Tensor:
        """V after each step ([T, B], ``rlgate.returns``' next_values) from ``values`` and
        ``bootstrap`` (default: the acting ones) and the stored final values."""
        values = self.values if values is None else values
        bootstrap = self.bootstrap_value if bootstrap is None else bootstrap
        return next_state_values(values, bootstrap, self.truncated, self.final_values)


@dataclass
class EpisodeLog:
    """Statistics of the episodes that finished during a rollout (1-D tensors, CPU)."""

    stats: dict[str, Tensor]

    @property
    def count(self) -> int:
        return int(self.stats["return"].numel()) if self.stats else 0


class RolloutWorker:
    """Steps ``env`` with ``model`` and fills Rollouts of ``length`` steps.

    Args:
        env: a batched env from rlgate.envs.make_vec.
        model: the actor-critic (its parameters may be a lagged copy, for IMPALA actors).
        length: unroll length T.
        chunk: store the core state every ``chunk`` steps (divides T).
        generator: RNG for sampling actions.
        greedy: take the most likely action instead of sampling (evaluation).
        novelty_bonus: added to the stored reward of each step that reaches an observation new
            to its episode (``rlgate.agents.novelty``); 0 = none. The policy's previous-reward
            input and the episode statistics keep the env's reward.
    """

    def __init__(
        self,
        env,
        model: ActorCritic,
        length: int,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
        novelty_bonus: float = 0.0,
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
        self.prev_action, self.prev_reward = model.first_inputs(n, self.device)
        self.state = model.initial_state(n, self.device)
        self.novelty_bonus = novelty_bonus
        self.novelty = EpisodicNovelty(obs) if novelty_bonus else None
        if self.novelty is not None:
            self.novelty.observe(obs, self.is_first)

    def state_dict(self) -> dict[str, Any]:
        """What the worker carries from one unroll into the next (the envs' current
        observation, reset flags, previous action and reward, the core state), for a
        checkpoint. Plain tensors and lists only."""
        return {
            "obs": {k: v.cpu().clone() for k, v in self.obs.items()},
            "is_first": self.is_first.cpu().clone(),
            "prev_action": self.prev_action.cpu().clone(),
            "prev_reward": self.prev_reward.cpu().clone(),
            "state": [s.cpu().clone() for s in self.state],
            **({"novelty": self.novelty.state_dict()} if self.novelty is not None else {}),
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Continue from a ``state_dict`` of a worker of the same env and model."""
        dev = self.device
        if set(data["obs"]) != set(self.obs) or len(data["state"]) != len(self.state):
            raise ValueError("the saved rollout state does not fit this env and model")
        self.obs = {k: v.to(dev) for k, v in data["obs"].items()}
        self.is_first = data["is_first"].to(dev)
        self.prev_action = data["prev_action"].to(dev)
        self.prev_reward = data["prev_reward"].to(dev)
        self.state = type(self.state)(*(s.to(dev) for s in data["state"]))
        if self.novelty is not None and "novelty" in data:
            self.novelty.load_state_dict(data["novelty"])

    @torch.no_grad()
    def collect(self, param_version: int = 0) -> tuple[Rollout, EpisodeLog]:
        t_len, n, dev = self.length, self.env.num_envs, self.device
        dist = self.model.action_dist
        obs_buf = {
            k: torch.empty((t_len + 1, *v.shape), dtype=v.dtype, device=dev)
            for k, v in self.obs.items()
        }
        prev_a = torch.empty(t_len + 1, *self.prev_action.shape, dtype=dist.dtype, device=dev)
        prev_r = torch.empty(t_len + 1, n, device=dev)
        first = torch.empty(t_len + 1, n, dtype=torch.bool, device=dev)
        actions = torch.empty(t_len, *self.prev_action.shape, dtype=dist.dtype, device=dev)
        logp = torch.empty(t_len, n, device=dev)
        values = torch.empty(t_len, n, device=dev)
        rewards = torch.empty(t_len, n, device=dev)
        terminated = torch.empty(t_len, n, dtype=torch.bool, device=dev)
        truncated = torch.empty(t_len, n, dtype=torch.bool, device=dev)
        final_values = torch.zeros(t_len, n, device=dev)
        states, finished = [], []
        for t in range(t_len + 1):
            for k, v in self.obs.items():
                obs_buf[k][t] = v
            prev_a[t], prev_r[t], first[t] = self.prev_action, self.prev_reward, self.is_first
            inputs = (self.obs, self.prev_action, self.prev_reward, self.is_first)
            if t == t_len:  # the next unroll starts here: only its value is needed now
                bootstrap = self.model.step(*inputs, self.state)[1]
                break
            if t % self.chunk == 0:
                states.append(tuple(s.clone() for s in self.state))
            action, params, value, self.state = self.model.act(
                *inputs, self.state, self.generator, self.greedy
            )
            actions[t] = action
            logp[t] = dist.log_prob(params, action)
            values[t] = value
            self.obs, reward, term, trunc, info = self.env.step(dist.env_action(action))
            rewards[t], terminated[t], truncated[t] = reward, term, trunc
            if "final_obs" in info:  # a time limit cut some episode: bootstrap from its end
                final_values[t] = torch.where(trunc, self._final_value(info, action, reward), 0.0)
            done = info["done"]
            self.is_first = info["is_first"]
            if self.novelty is not None:  # the first observation of an episode earns nothing
                new = self.novelty.observe(self.obs, self.is_first) & ~self.is_first
                rewards[t] += self.novelty_bonus * new
            # previous action and reward start over with each episode
            self.prev_action, self.prev_reward = self.model.next_inputs(
                self.is_first, action, reward
            )
            # the env fills info["episode"] exactly where some episode ended (it knows that
            # already): reading it here costs no host sync; the rows of the finished episodes
            # are picked once, after the unroll
            episode = info["episode"]
            if episode:
                rows = torch.stack([v.to(torch.float32) for v in episode.values()])
                finished.append((tuple(episode), rows, done))
        stats = {}
        if finished:
            keys = finished[0][0]
            if any(k != keys for k, _, _ in finished):
                raise RuntimeError("the env's episode statistics changed keys within a rollout")
            rows = torch.cat([r for _, r, _ in finished], dim=1)
            ended = torch.cat([d for _, _, d in finished])
            stats = dict(zip(keys, rows[:, ended].cpu().unbind(0)))
        rollout = Rollout(
            obs=obs_buf,
            prev_action=prev_a,
            prev_reward=prev_r,
            is_first=first,
            actions=actions,
            logp=logp,
            values=values,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_values=final_values,
            states=states,
            bootstrap_value=bootstrap,
            param_version=param_version,
        )
        return rollout, EpisodeLog(stats)

    def _final_value(self, info, action: Tensor, reward: Tensor) -> Tensor:
        """V(final observation) [N] from the state before the reset (every copy; read where
        truncated)."""
        not_first = torch.zeros(self.env.num_envs, dtype=torch.bool, device=self.device)
        return self.model.step(info["final_obs"], action, reward, not_first, self.state)[1]
