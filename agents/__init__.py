"""Actor-critic agents for rlgate, installed as ``rlgate.agents`` (the folder is ``agents/``).

- ``encoders``: an observation encoder per space (Box vectors and images, Discrete,
  MultiDiscrete, MultiBinary, Dict and Tuple, the grid views);
- ``distributions``: an action distribution per space (Discrete, MultiDiscrete, Box,
  MultiBinary), shared by acting and learning;
- ``actor_critic``: encoder -> recurrent core (rlgate.cores) -> policy and value heads;
- ``rollout``: batched rollouts on the device, time-major storage with is_first and states;
- ``ppo``: recurrent PPO; ``impala``: the V-trace learner; ``actors``: IMPALA's actor
  processes and shared-memory unroll queue;
- ``registry``: ``AGENTS``, one entry per agent (its learner and what the trainer asks of it).
"""

if __name__ != "rlgate.agents":  # the folder must not be importable as a generic "agents"
    raise ImportError(
        f"this folder is the package rlgate.agents, imported here as {__name__!r}: "
        "install rlgate from the checkout (pip install -e .) and import rlgate.agents"
    )
