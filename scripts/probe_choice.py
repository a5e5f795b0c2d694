"""Supervised probe of the Match choice: how fast can the actor-critic learn where the cue's
square is, when it is told?

No RL: the model is trained by cross-entropy, on episodes of PassiveMatch played by a random
policy, to output at the first step of the choice phase the way to the cue's square (left, up
or right for positions 0, 1, 2). That needs the same thing the RL agent's choice needs: the
colour remembered through the delay, compared with the squares' colours in view. The table
gives the accuracy on each batch (fresh episodes, so it is held-out accuracy) every
``--every`` Adam steps, for heads with and without the view gate and with the policy's last
layer initialised at gain 0.01 (CleanRL's) or 1. Chance is 1/3.

Usage:
    python scripts/probe_choice.py                      # ~5 min on 2 cores
    python scripts/probe_choice.py --delay 30 --core lstm --steps 600
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from rlgate.agents.actor_critic import ActorCritic
from rlgate.benchmark import format_table
from rlgate.envs import make_vec
from rlgate.envs.match import CHOICE

#: the way to the cue's square at the first choice step, by its position: left, up, right
WAY = torch.tensor([3, 0, 1])
VARIANTS = {
    "MLP heads, policy gain 0.01": (False, 0.01),
    "MLP heads, policy gain 1": (False, 1.0),
    "view gate, policy gain 0.01": (True, 0.01),
    "view gate, policy gain 1": (True, 1.0),
}


def episodes(env, steps: int, generator: torch.Generator):
    """Random-policy episodes up to their first choice step: (obs dict of [T, N, ...],
    prev_action [T, N], prev_reward [T, N], target way [N])."""
    n = env.num_envs
    obs, _ = env.reset()
    action, reward = torch.zeros(n, dtype=torch.long), torch.zeros(n)
    seen, actions, rewards = [], [], []
    for t in range(steps):
        seen.append(obs)
        actions.append(action)
        rewards.append(reward)
        if t < steps - 1:
            action = torch.randint(0, env.num_actions, (n,), generator=generator)
            obs, reward, *_ = env.step(action)
    assert bool((env.state["phase"] == CHOICE).all()), "episodes must reach the choice phase"
    stacked = {k: torch.stack([o[k] for o in seen]) for k in seen[0]}
    return stacked, torch.stack(actions), torch.stack(rewards), WAY[env.state["cue_position"]]


def probe(args, view_gate: bool, gain: float) -> list[float]:
    torch.manual_seed(args.seed)
    env = make_vec("rlgate/PassiveMatch-v0", args.batch, seed=args.seed, delay=args.delay)
    h = args.hidden_size
    model = ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        args.core,
        h,
        h,
        head_size=h,
        view_gate=view_gate,
        policy_init_gain=gain,
        observation_kinds=env.observation_kinds,
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = env.cue_steps + env.delay + 1  # the cue phase, the delay, the first choice step
    gen = torch.Generator().manual_seed(args.seed)
    first = torch.zeros(steps, args.batch, dtype=torch.bool)
    accuracy = []
    for step in range(1, args.steps + 1):
        obs, prev_a, prev_r, target = episodes(env, steps, gen)
        logits, _, _ = model(obs, prev_a, prev_r, first, model.initial_state(args.batch))
        loss = F.cross_entropy(logits[-1], target)
        if step % args.every == 0:
            accuracy.append((logits[-1].argmax(-1) == target).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return accuracy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=int, default=5)
    ap.add_argument("--core", default="ur-lstm")
    ap.add_argument("--hidden-size", type=int, default=64, help="core, encoder and head size")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per variant")
    ap.add_argument("--every", type=int, default=50, help="steps between table columns")
    ap.add_argument("--batch", type=int, default=256, help="episodes per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(
        f"# probe_choice: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"PassiveMatch delay {args.delay}, {args.core}, hidden {args.hidden_size}, "
        f"batch {args.batch}, lr {args.lr}, seed {args.seed}; accuracy (chance 0.33) after N steps"
    )
    cols = [str(args.every * (i + 1)) for i in range(args.steps // args.every)]
    rows = []
    for name, (view_gate, gain) in VARIANTS.items():
        acc = probe(args, view_gate, gain)
        rows.append([name, *(f"{a:.2f}" for a in acc)])
        print(f"  {name}: done", flush=True)
    print(format_table(["heads", *cols], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
