"""Named training recipes: the one source of every setup whose result the docs report.

A recipe is an env and the settings that learn it, the same for every core, so that ``--core``
alone changes between two runs that compare memories. ``rlgate train --recipe NAME`` starts
from one (flags given as well override its settings), ``rlgate recipes`` lists them with the
flags they stand for, and scripts/bench_train.py and the reproduction sweep (rlgate.sweep)
train them. ``settings`` holds TrainConfig field values, with the agent sections (``ppo``,
``impala``) as dicts of their own fields; what a recipe leaves out keeps TrainConfig's default.

This module is data and a flag printer only: ``TrainConfig.from_recipe`` builds the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named setup: what it trains, its settings, and why they are what they are."""

    summary: str
    settings: dict[str, Any]
    #: the measurements behind the settings (printed by ``rlgate recipes NAME``)
    notes: str = ""
    #: where the docs report its result
    result: str = ""

    def with_changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The settings with ``changes`` applied; an agent section's dict is merged field by
        field (``{"ppo": {"vf_coef": 0.5}}`` keeps the recipe's other PPO settings)."""
        out = dict(self.settings)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
        return out

    def flags(self) -> list[str]:
        """The ``rlgate train`` flags that stand for this recipe's settings."""
        return flags(self.settings)


def flags(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """TrainConfig settings as ``rlgate train`` flags, in the order given: booleans as
    ``--x``/``--no-x``, tuples as several values after one flag, sections as ``--ppo.x``."""
    out: list[str] = []
    for key, value in settings.items():
        name = f"--{prefix}{key.replace('_', '-')}"
        if isinstance(value, dict):
            out += flags(value, prefix=f"{prefix}{key}.")
        elif isinstance(value, bool):
            out.append(name if value else f"--{prefix}no-{key.replace('_', '-')}")
        elif isinstance(value, (tuple, list)):
            out += [name, *map(str, value)]
        else:
            out += [name, str(value)]
    return out


#: the agent that learns the Match tasks' choice: MLP heads over [core output, the view gated by
#: it] (gated attention), a policy initialised at gain 1, unrolls spanning an episode, 32 envs
MATCH_AGENT = {
    "num_envs": 32,
    "unroll_length": 128,
    "hidden_size": 64,
    "encoder_size": 64,
    "head_size": 64,
    "view_gate": True,
    "policy_init_gain": 1.0,
}

#: the Match agent's learning settings, the same on both Match tasks (_MATCH_NOTES says why)
_MATCH = {
    **MATCH_AGENT,
    "reward_scale": 0.1,
    "total_timesteps": 8_000_000,
    "ppo": {"ent_coef": 0.03, "vf_coef": 2.0},
}

_MATCH_NOTES = """\
- Rewards x 0.1: a match pays 10 and the apples add about as much (returns near 20); at scale 1
  the value loss's gradient drowns the policy gradient.
- Gated-attention heads (--view-gate) and policy gain 1: on PassiveMatch delay 30 (ur-lstm, 8M
  steps, 5 seeds, greedy), heads over [core, features] without them reached 0.72-0.88; with the
  gate beside the features 0.885-0.938; with the view read only through the gate 0.78-1.00
  (mean 0.91), three seeds of five at 0.93 or more. Told the answer, only gated heads at gain 1
  learn the choice within 400 steps (scripts/probe_choice.py).
- Entropy 0.03: with 0.01 the agent learns to take the middle square, then its choice-phase
  policy turns deterministic (max probability 0.95-1.0) and stops trying either side: success
  sticks at 2/3 (1.0 with the cue's square in the middle, 0.5 at either side), whatever the core
  remembers. Entropy 0.05 with 16 envs x 256-step unrolls did no better over 3 seeds and ran
  ~1.4x slower; 0.06 and 0.1 stayed at chance.
- 32 envs: 64 stayed at chance on PassiveMatch (2 seeds of 2), 32 learned (3 of 3).
- Value-loss weight 2: a run at chance has not learned to keep the cue (`rlgate eval --report`'s
  linear probe reads the cue from the core output at the choice at 0.31-0.37, chance 0.33; 1.00
  in a run that learned), and the value loss is the likelier teacher of that memory (at the
  choice the return depends on the cue, while the policy's gradient needs a memory to read
  first). At 3M steps, 4 seeds: weight 2 left chance on 4 of 4 (mean greedy 0.79), 0.5 on 3 of 4
  (0.69), 4 on 1 of 2.
- 8M steps: at 5M one of the nine (colour, position) cases was still missing on both seeds."""

_ACTIVE_MATCH_NOTES = """\
- PassiveMatch's agent, plus what finding the cue first needs (ur-lstm, seed 1, delay 15).
- The seen-so-far loss (--seen-loss 1): from the core output, predict which kinds of cell the
  episode has shown so far. Without it every run stayed at chance (success 0.33) for 10-40M
  steps: no memory formed (the success of the episodes that saw the cue equalled the others'),
  so looking for the cue paid nothing, so it was seen in only 28% of the episodes (a random
  walk's rate), too few to start a memory through the choice alone. With it the memory forms
  first, looking pays, and the agent learns to look (cue seen in 90% of the episodes by 4M
  steps) and to choose.
- The view's channel counts (--view-pool): the cue sits at a different cell of the view in
  every episode; the counts make it one input to remember wherever it stands.
- Entropy 0.05: every run without the loss ended with the choice collapsed onto one square;
  the runs with the loss used 0.05 (the view-pool runs' setting) from the start.
- 6M steps (the sweep's budget, `scripts/reproduce.py --preset active-match`): greedy success
  >= 0.9 on 2 of 5 ur-lstm seeds at 6M and 5 of 5 by 10M (0.98-0.99); lstm 5 of 5 at 6M;
  ur-gru 5 of 5 (0.98-0.99); gru 0 of 5 (0.73-0.90: it remembers the cue, but leaves one or two
  colour x position cases of the choice unlearned); the memoryless control 0 of 5 (chance).
  With delay=30: ur-lstm 3 of 5, lstm 2 of 5, ur-gru 1 of 5, gru 1 of 5 at 6M (the misses: a
  stuck case), the control at chance. With delay=5: ur-lstm, gru and ur-gru 5 of 5, lstm 4 of 5.
""" + "\n".join(_MATCH_NOTES.splitlines()[:2])

_POPGYM_NOTES = """\
- The same agent everywhere (POPGym's own comparison keeps one agent per model too): 64 envs x
  64-step unrolls (4,096 steps an update; truncated BPTT from the stored states covers episodes
  of up to 831 steps), hidden 64 and MLP heads of 64 as the other recipes, policy gain 1 (the
  repeat-previous-easy recipe's finding), PPO's defaults otherwise.
- 500k env steps a run: the benchmark is 756 runs (6 cores x 14 envs x 3 difficulties x 3
  seeds), 378M env steps, about six hours of a 2-core machine running two 1-thread runs at
  ~9k steps/s each (resumable, so it spreads over several sittings). POPGym's paper trained
  10-15M steps (RLlib PPO: 65,536-step batches, BPTT 1024, hidden 256, lr 5e-5, 30 epochs), so
  its numbers are a reference at 20-30x the budget, not a like-for-like one."""

RECIPES: dict[str, Recipe] = {
    "tmaze": Recipe(
        summary="the main job: PPO learns the T-maze (a cue, an 8-step corridor, a choice); "
        "under a minute on 2 cores",
        settings={"env": "rlgate/TMaze-v0"},
        notes="TrainConfig's defaults (32 envs x 32-step unrolls, linear heads, 300k steps): "
        "success climbs from 0.5 (guessing) to 1.0.",
        result="docs/results.md#the-t-maze",
    ),
    "passive-match": Recipe(
        summary="PassiveMatch, delay 30: remember a colour over 30 steps of apples",
        settings={"env": "rlgate/PassiveMatch-v0", "env_option": ("delay=30",), **_MATCH},
        notes=_MATCH_NOTES,
        result="docs/results.md#passivematch-delay-30",
    ),
    "active-match": Recipe(
        summary="ActiveMatch, delay 15: look for the colour, then remember it (the Match agent "
        "and the seen-so-far loss)",
        settings={
            "env": "rlgate/ActiveMatch-v0",
            "env_option": ("delay=15",),
            **_MATCH,
            "view_pool": True,
            "seen_loss": 1.0,
            "ppo": {**_MATCH["ppo"], "ent_coef": 0.05},
            "total_timesteps": 6_000_000,
        },
        notes=_ACTIVE_MATCH_NOTES,
        result="docs/results.md#active-match",
    ),
    "active-match-base": Recipe(
        summary="ActiveMatch, delay 15, with PassiveMatch's agent alone: stays at chance (the "
        "baseline of the seen-so-far loss; the paper's grid ran it)",
        settings={"env": "rlgate/ActiveMatch-v0", "env_option": ("delay=15",), **_MATCH},
        notes="PassiveMatch's recipe on ActiveMatch, where the cue has to be found first: no run "
        "left chance in 10-40M steps (docs/results.md#active-match says why). "
        + _MATCH_NOTES.split("\n", 1)[0][2:],
        result="docs/results.md#active-match",
    ),
    "memory-s7": Recipe(
        summary="MemoryS7 (minigrid's Memory task, rlgate's tensor clone): a key object, then a "
        "choice between two",
        settings={
            "env": "rlgate/MemoryS7-v0",
            "num_envs": 64,
            "unroll_length": 128,
            "hidden_size": 64,
            "encoder_size": 64,
            "head_size": 64,
            "total_timesteps": 3_000_000,
            "ppo": {"ent_coef": 0.05},
        },
        notes="Entropy 0.05: the hint object is behind the agent in 3 of 4 starts, so it has to "
        "learn to turn around and look; with 0.01 it settles at 0.62 (= 1/4 + 3/4 x 1/2). 64 envs "
        "learn it as well as 32 and run ~1.5x faster.",
        result="docs/results.md#memorys7",
    ),
    "cartpole": Recipe(
        summary="CartPole-v1 through gymnasium's vector env: a control task with no memory",
        settings={
            "env": "CartPole-v1",
            "num_envs": 16,
            "unroll_length": 32,
            "reward_scale": 0.1,
            "total_timesteps": 200_000,
        },
        notes="Rewards x 0.1: with 1 a step returns reach ~100, the value loss's gradient fills "
        "the clipping norm and the policy barely moves (lstm: return 42 at 200k steps; 500 with "
        "x 0.1).",
        result="docs/benchmarks.md#training-end-to-end",
    ),
    "repeat-previous-easy": Recipe(
        summary="POPGym's RepeatPreviousEasy (popgym extra): say the card seen 4 steps ago",
        settings={
            "env": "popgym-RepeatPreviousEasy-v0",
            "num_envs": 16,
            "unroll_length": 64,
            "policy_init_gain": 1.0,
            "total_timesteps": 200_000,
            "ppo": {"epochs": 10, "num_minibatches": 2},
        },
        notes="Policy gain 1 and 10 epochs of 2 minibatches: lstm's return at 200k steps was "
        "0.16 with the defaults, 0.48 with gain 1 and 0.79 with both when they were chosen "
        "(returns lie in [-1, 1]); docs/benchmarks.md has a later seed-1 run: lstm 0.38, "
        "ur-lstm 0.97.",
        result="docs/benchmarks.md#training-end-to-end",
    ),
    "popgym": Recipe(
        summary="the POPGym benchmark's agent (scripts/reproduce.py --preset popgym), the same "
        "for every env, difficulty and core: pass --env rlgate/popgym-<Name><Level>-v0",
        settings={
            "env": "rlgate/popgym-RepeatPreviousEasy-v0",
            "num_envs": 64,
            "unroll_length": 64,
            "hidden_size": 64,
            "encoder_size": 64,
            "head_size": 64,
            "policy_init_gain": 1.0,
            "total_timesteps": 500_000,
        },
        notes=_POPGYM_NOTES,
        result="docs/results.md#popgym",
    ),
}
