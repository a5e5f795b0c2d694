"""The Match tasks' evaluation report: where a Match agent's choices go right or wrong, and
whether its core remembers the cue. ``MatchEnv.eval_report`` is the task's hook, which
``rlgate eval RUN --report`` (generic) calls; ``report_lines`` prints it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlgate.envs.grid import ACTION_NAMES, COLOUR


def probe_accuracy(features: Tensor, labels: Tensor, num_classes: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear probe: softmax regression of ``labels`` [N] (long, in
    0..num_classes-1) from ``features`` [N, D], fit by full-batch Adam on the first half
    (features standardised with that half's statistics, weights starting at zero, so the
    result is deterministic) and scored on the second half. NaN with fewer than 2 samples."""
    n = labels.shape[0] // 2
    if n == 0:
        return float("nan")
    x = features.float()
    x = (x - x[:n].mean(0)) / (x[:n].std(0, unbiased=False) + 1e-6)
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x[:n] @ weight + bias, labels[:n])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        guess = (x[n:] @ weight + bias).argmax(-1)
    return float((guess == labels[n:]).float().mean())


@torch.no_grad()
def choice_report(
    env,
    model,
    episodes: int,
    choice_phase: int,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> dict[str, Any]:
    """Where a Match agent's choices go right or wrong.

    Runs ``episodes`` episodes and splits their success by the cue's colour and by the
    position of the cue's square in the choice room (0 = leftmost), and averages the policy's
    action probabilities at the first step of the choice phase per position. A policy that
    remembers the colour but has stopped exploring one side shows it here: success 1 at one
    position and 1/2 at the others, with near-deterministic first actions.

    Args:
        env: a batched MatchEnv (all of its copies play); model: an ActorCritic for it.
        choice_phase: the env's number of the choice phase (``state["phase"]``).

    Returns:
        dict with episodes, success_rate, by_colour and by_position ({index:
        (success rate, episodes)}), by_colour_and_position ({(colour, position): (success
        rate, episodes)}: a policy learns these cases one or two at a time), first_action
        ({position: mean probabilities [A]}) and, for a model with --view-gate, gate ({cue
        colour: the mean gate per view channel [channels] at the first choice step}: a gate
        that attends to the remembered colour opens that colour's channel and closes the
        other colours'; empty without the gate), and memory: the held-out accuracy of a
        linear probe (``probe_accuracy``) that reads the cue's colour from the core output at
        the first choice step (chance 1/num_colours). It separates the two ways to fail: a
        run stuck at chance with memory near chance has not learned to remember the cue;
        with memory near 1 it remembers and has not learned to use it. cue_seen: the share
        of the episodes whose cue phase showed the square (Active Match: did it look?).
        headline: the numbers a sweep's table shows per run (``rlgate.sweep``): the cue seen,
        the memory probe, and the worst colour x position case and its success.
    """
    num_envs, dev = env.num_envs, env.device
    obs, info = env.reset()
    first = info["is_first"]
    prev_action, prev_reward = model.first_inputs(num_envs, dev)
    state = model.initial_state(num_envs, dev)
    st = env.state
    # each copy's episode as drawn at its start (auto-reset redraws them when it ends)
    cue, target = st["cue"].clone(), st["cue_position"].clone()
    colour_ok, position_ok = [], []  # (key, success) per finished episode
    first_probs: dict[int, list[Tensor]] = {}
    first_gates: dict[int, list[Tensor]] = {}
    gate_out: list[Tensor] = []
    core_out: list[Tensor] = []
    memory_x: list[Tensor] = []
    memory_y: list[int] = []
    seen: list[float] = []  # per episode: the cue phase showed the square
    model.core.register_forward_hook(lambda m, args, out: core_out.append(out[0]))
    if model.view_gate:
        model.gate.register_forward_hook(lambda m, args, out: gate_out.append(out))
    while len(colour_ok) < episodes:
        action, logits, _, state = model.act(
            obs, prev_action, prev_reward, first, state, generator, greedy
        )
        probs = torch.softmax(logits, dim=-1)  # the Match tasks' actions are Discrete
        starting = ((st["phase"] == choice_phase) & (st["t_phase"] == 0)).nonzero().squeeze(1)
        for b in starting.tolist():
            first_probs.setdefault(int(target[b]), []).append(probs[b].cpu())
            memory_x.append(core_out[-1][0, b].cpu())
            memory_y.append(int(cue[b]))
            if gate_out:
                gate = torch.sigmoid(gate_out[-1][0, b]).cpu()
                first_gates.setdefault(int(cue[b]), []).append(gate)
        gate_out.clear()
        core_out.clear()
        obs, reward, _, _, info = env.step(action)
        done = info["done"]
        for b in done.nonzero().squeeze(1).tolist():
            ok = float(info["episode"]["success"][b])
            colour_ok.append((int(cue[b]), ok))
            position_ok.append((int(target[b]), ok))
            seen.append(float(info["episode"]["cue_seen"][b]))
        cue = torch.where(done, st["cue"], cue)
        target = torch.where(done, st["cue_position"], target)
        first = info["is_first"]
        prev_action, prev_reward = model.next_inputs(first, action, reward)

    def split(pairs):
        groups: dict[Any, list[float]] = {}
        for key, ok in pairs[:episodes]:
            groups.setdefault(key, []).append(ok)
        return {k: (sum(v) / len(v), len(v)) for k, v in sorted(groups.items())}

    cases = split([((c, p), ok) for (c, ok), (p, _) in zip(colour_ok, position_ok)])
    memory = (
        probe_accuracy(torch.stack(memory_x), torch.tensor(memory_y), env.num_colours)
        if memory_x
        else float("nan")
    )
    worst = min(cases, key=lambda case: cases[case][0])
    cue_seen = sum(seen[:episodes]) / episodes
    return {
        "episodes": episodes,
        "success_rate": sum(ok for _, ok in colour_ok[:episodes]) / episodes,
        "by_colour": split(colour_ok),
        "by_position": split(position_ok),
        "by_colour_and_position": cases,
        "first_action": {
            k: torch.stack(v).mean(0).tolist() for k, v in sorted(first_probs.items())
        },
        "gate": {k: torch.stack(v).mean(0).tolist() for k, v in sorted(first_gates.items())},
        "memory": memory,
        "cue_seen": cue_seen,
        "headline": {
            "cue seen": round(cue_seen, 3),
            "memory probe": round(memory, 3),
            "worst case": round(cases[worst][0], 3),
            "worst case is": f"colour {worst[0]} at {worst[1]}",
        },
    }


def report_lines(out: dict[str, Any]) -> list[str]:
    """``choice_report``'s result as the lines ``rlgate eval --report`` prints."""
    lines = []
    for key, title in (
        ("by_colour", "cue colour"),
        ("by_position", "position of the cue square (0 = leftmost)"),
    ):
        parts = [f"{k}: {rate:.2f} ({n})" for k, (rate, n) in out[key].items()]
        lines.append(f"success by {title}: " + ", ".join(parts))
    cases = out["by_colour_and_position"]
    positions = sorted({p for _, p in cases})
    lines.append("success by cue colour (rows) and position (columns):")
    for colour in sorted({c for c, _ in cases}):
        cells = [cases.get((colour, p), (float("nan"), 0))[0] for p in positions]
        lines.append(f"  colour {colour}: " + "  ".join(f"{v:.2f}" for v in cells))
    for position, probs in out["first_action"].items():
        shown = ", ".join(f"{a} {p:.2f}" for a, p in zip(ACTION_NAMES, probs))
        lines.append(f"first choice action when the cue square is at {position}: {shown}")
    lines.append(
        f"cue seen: the cue phase showed the square in {out['cue_seen']:.2f} of the episodes"
    )
    lines.append(
        f"memory: the cue's colour read from the core output at the first choice step "
        f"by a linear probe, held-out accuracy {out['memory']:.2f} (chance "
        f"{1 / len(out['by_colour']):.2f})"
    )
    if out["gate"]:
        channels = len(next(iter(out["gate"].values())))
        names = ["floor", "wall", "apple"] + [f"c{k}" for k in range(channels - COLOUR)]
        lines.append("view gate at the first choice step by cue colour (rows) and view channel:")
        lines.append(" " * 11 + "".join(f"{n:>6}" for n in names))
        for colour, gate in out["gate"].items():
            lines.append(f"  colour {colour}:" + "".join(f"{g:6.2f}" for g in gate))
    return lines
