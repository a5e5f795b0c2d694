"""The agents, one entry each: the learner and what the trainer asks of the agent.

An agent's options are its section of ``TrainConfig`` (``rlgate.config.AGENT_SECTIONS``, under
the same name). Adding an agent is one section there and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rlgate.agents.impala import IMPALA
from rlgate.agents.learner import Learner
from rlgate.agents.ppo import PPO


@dataclass(frozen=True)
class Agent:
    """What the trainer needs of an agent.

    learner: the Learner subclass, built from (model, section, gamma, max_grad_norm,
        optimizer, world, reward_scale).
    state_interval: run config -> the steps between stored core states of a rollout (PPO's
        BPTT chunk), None for the unroll's start only.
    actor_processes: run config -> actor processes to start (0: act in the learner's process).
    off_policy: learns from unrolls of older parameters (logs perf/policy_lag).
    """

    learner: type[Learner]
    state_interval: Callable[[object], int | None]
    actor_processes: Callable[[object], int]
    off_policy: bool


AGENTS: dict[str, Agent] = {
    "ppo": Agent(PPO, lambda cfg: cfg.ppo.bptt, lambda cfg: 0, off_policy=False),
    "impala": Agent(IMPALA, lambda cfg: None, lambda cfg: cfg.impala.num_actors, off_policy=True),
}
