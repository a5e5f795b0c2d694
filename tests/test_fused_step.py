"""The acting step in one native call (rlgate.agents.fused_step) against the module-by-module
step it replaces (``ActorCritic.module_step``), for every encoder view, core kind and head the
native step covers, with resets; where it applies and where it does not; what it refuses."""

from __future__ import annotations

import ctypes
import logging

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlgate.agents import fused_step
from rlgate.agents.actor_critic import ActorCritic
from rlgate.cores import native

Box, Discrete = gym.spaces.Box, gym.spaces.Discrete

pytestmark = pytest.mark.skipif(not native.available()[0], reason="no C compiler")

MINIGRID = gym.spaces.Dict(
    {"image": Box(0, 10, (7, 7, 3), np.uint8), "direction": Discrete(4)}
)  # fmt: skip
GRID = gym.spaces.Dict({"image": Box(0, 1, (5, 5, 6), np.uint8)})


def _obs(space: gym.Space, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """n observations of ``space`` (a Dict of the leaves above, or a vector Box)."""
    if isinstance(space, Box):
        return {"obs": torch.randn(n, *space.shape, generator=g)}
    out = {}
    for key, sub in space.spaces.items():
        if isinstance(sub, Discrete):
            out[key] = torch.randint(0, int(sub.n), (n,), generator=g)
        elif sub.high.max() == 1:  # a 0/1 grid, one hot channel per cell
            hot = torch.randint(0, sub.shape[-1], (n, *sub.shape[:-1]), generator=g)
            out[key] = torch.nn.functional.one_hot(hot, sub.shape[-1]).to(torch.uint8)
        else:  # minigrid codes: objects 0..10, colours 0..5, states 0..2
            hi = torch.tensor([11, 6, 3])
            out[key] = (torch.rand(n, *sub.shape, generator=g) * hi).to(torch.uint8)
    return out


CASES = {
    # name: (obs space, kinds, action space, core, ActorCritic options)
    "minigrid-mlp-ur-lstm": (
        MINIGRID, {"image": "minigrid"}, Discrete(7), "ur-lstm", {"head_size": 16},
    ),
    "grid-gate-pool-lstm": (
        GRID, {"image": "grid"}, Discrete(4), "lstm",
        {"head_size": 16, "view_gate": True, "view_pool": True},
    ),
    "grid-linear-gru": (GRID, {"image": "grid"}, Discrete(4), "gru", {}),
    "minigrid-gate-ur-gru": (
        MINIGRID, {"image": "minigrid"}, Discrete(3), "ur-gru", {"head_size": 8, "view_gate": True},
    ),
    "vector-multidiscrete-u-lstm": (
        Box(-1, 1, (5,)), {}, gym.spaces.MultiDiscrete([3, 2]), "u-lstm", {"head_size": 12},
    ),
    "vector-box-om-lstm": (
        Box(-1, 1, (5,)), {}, Box(-1, 1, (2,)), "om-lstm", {"core_options": {"chunk_size": 4}},
    ),
    "vector-binary-c-lstm": (
        Box(-1, 1, (3,)), {}, gym.spaces.MultiBinary(3), "c-lstm", {"head_size": 8},
    ),
}  # fmt: skip


def _model(case: str, seed: int = 0) -> ActorCritic:
    space, kinds, action, core, options = CASES[case]
    options = dict(options)
    core_options = {"backend": "native", **options.pop("core_options", {})}
    torch.manual_seed(seed)
    return ActorCritic(
        space, action, core, hidden_size=16, encoder_size=12, core_options=core_options,
        observation_kinds=kinds, **options,
    )  # fmt: skip


def _run(model: ActorCritic, space: gym.Space, steps: int, n: int, fused: bool, seed: int = 1):
    """``steps`` acting steps of n envs from random inputs with resets: the outputs of each."""
    g = torch.Generator().manual_seed(seed)
    state = model.initial_state(n)
    prev_action, prev_reward = model.first_inputs(n)
    outs = []
    with torch.no_grad():
        for t in range(steps):
            obs = _obs(space, n, g)
            is_first = torch.rand(n, generator=g) < (1.0 if t == 0 else 0.3)
            step = model.step if fused else model.module_step
            params, value, state = step(obs, prev_action, prev_reward, is_first, state)
            outs.append((params, value, *state))
            prev_action = model.action_dist.sample(params, g, greedy=False)
            prev_reward = torch.randn(n, generator=g)
    return outs


@pytest.mark.parametrize("case", list(CASES))
def test_the_native_step_is_the_module_step(case):
    """Ten steps of 19 envs (a row count off the kernels' 4-row blocks), resets included: the
    policy outputs, values and states of the native step equal the module-by-module step's
    to float32 rounding, and the native step is the one ``step`` runs."""
    model, space = _model(case), CASES[case][0]
    obs = _obs(space, 19, torch.Generator().manual_seed(0))
    assert fused_step.for_model(model, obs, model.initial_state(19)) is not None
    native_out = _run(model, space, 10, 19, True)
    module_out = _run(model, space, 10, 19, False)
    for a, b in zip(native_out, module_out):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_the_native_step_follows_every_weight_update():
    """An in-place update of any parameter (as the optimizer's, which moves its version
    counter) reaches the next native step: the packed weights are rebuilt."""
    model = _model("grid-gate-pool-lstm")
    before = _run(model, GRID, 3, 8, True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    after = _run(model, GRID, 3, 8, True)
    assert not torch.allclose(before[-1][0], after[-1][0])
    for a, b in zip(after, _run(model, GRID, 3, 8, False)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_the_native_step_does_not_depend_on_the_thread_count():
    """The envs' rows are split over the threads in whole blocks with the same arithmetic per
    row: one thread and two give the same bits."""
    model = _model("minigrid-mlp-ur-lstm")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(model, MINIGRID, 3, 64, True)
        torch.set_num_threads(2)
        two = _run(model, MINIGRID, 3, 64, True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_where_the_native_step_does_not_apply_the_module_step_runs_and_says_why(caplog):
    obs = _obs(GRID, 4, torch.Generator().manual_seed(0))
    reference = ActorCritic(GRID, Discrete(4), "lstm", 16, 12, {"backend": "reference"},
                            observation_kinds={"image": "grid"})  # fmt: skip
    cumax = ActorCritic(GRID, Discrete(4), "o-lstm", 16, 12, {"backend": "auto"},
                        observation_kinds={"image": "grid"})  # fmt: skip
    with caplog.at_level(logging.INFO, logger="rlgate.agents.fused_step"):
        assert fused_step.for_model(reference, obs, reference.initial_state(4)) is None
        assert fused_step.for_model(cumax, obs, cumax.initial_state(4)) is None
    assert "backend='reference'" in caplog.text and "no native step for the o-lstm" in caplog.text
    floats = {"image": obs["image"].float()}
    model = _model("grid-linear-gru")
    state = model.initial_state(4)
    assert fused_step.for_model(model, obs, state) is not None
    assert "uint8" in fused_step.why_not(model, floats, model.initial_state(4))
    # forward hooks see the modules run
    seen = []
    handle = model.core.register_forward_hook(lambda m, args, out: seen.append(out[0]))
    with torch.no_grad():
        model.step(obs, *model.first_inputs(4), torch.ones(4, dtype=torch.bool), state)
    handle.remove()
    assert len(seen) == 1
    # with gradients, step runs the modules (the native step has no backward)
    params, _, _ = model.step(obs, *model.first_inputs(4), torch.ones(4, dtype=torch.bool), state)
    assert params.requires_grad


def test_the_native_step_refuses_what_it_cannot_read():
    model = _model("minigrid-mlp-ur-lstm")
    g = torch.Generator().manual_seed(0)
    obs = _obs(MINIGRID, 4, g)
    first = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        model.step(obs, *model.first_inputs(4), first, model.initial_state(4))
        with pytest.raises(ValueError, match="the core state must be a contiguous"):
            model.step(obs, *model.first_inputs(4), first, model.initial_state(5))
        bad = dict(obs, image=obs["image"].clone())
        bad["image"][2, 6, 6, 0] = 200  # the last cell: past the view's one-hot features
        with pytest.raises(ValueError, match="minigrid codes must index"):
            model.step(bad, *model.first_inputs(4), first, model.initial_state(4))
    # native.c checks the sizes it is handed itself: too little work space writes nothing
    step = fused_step.for_model(model, obs, model.initial_state(4))
    args = fused_step.Args.from_buffer_copy(step.args)
    args.work_size = 1
    assert fused_step._library().policy_step(ctypes.byref(args)) == -1
