"""torch.compile over rlgate's cores and models: the native and Triton kernels are opaque to
Dynamo (one graph break), so a compiled model computes what the eager one does."""

from __future__ import annotations

import pytest
import torch

from rlgate.cores import CORES, make_core

PRESETS = sorted({p.name for p in CORES.values()})


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 8, generator=g)
    is_first = torch.zeros(6, 3, dtype=torch.bool)
    is_first[2, 1] = is_first[4, 0] = True
    return x, is_first


def _run(module, x, is_first):
    """Outputs and parameter gradients of a forward + backward."""
    module.zero_grad()
    xx = x.clone().requires_grad_(True)
    state = module.initial_state(x.shape[1])
    y, final = module(xx, state, is_first)
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + sum(s.sum() for s in final)
    loss.backward()
    grads = [p.grad.clone() for p in module.parameters()]
    return y.detach(), [s.detach() for s in final], xx.grad, grads


@pytest.mark.parametrize("name", PRESETS)
def test_compiled_core_matches_eager(name):
    """Dynamo (the "eager" compile backend: tracing without code generation, where the native
    kernels once corrupted memory) over every preset on the default backend."""
    torch.manual_seed(1)
    core = make_core(name, 8, 16)
    x, is_first = _inputs()
    eager = _run(core, x, is_first)
    compiled = _run(torch.compile(core, backend="eager"), x, is_first)
    for a, b in zip(eager[:3], compiled[:3]):
        if isinstance(a, list):
            for u, v in zip(a, b):
                torch.testing.assert_close(v, u)
        else:
            torch.testing.assert_close(b, a)
    for u, v in zip(eager[3], compiled[3]):
        torch.testing.assert_close(v, u)


@pytest.mark.parametrize("name", ["ur-lstm", "gru"])
def test_inductor_compiled_core_matches_eager(name):
    torch.manual_seed(2)
    core = make_core(name, 8, 16)
    x, is_first = _inputs(3)
    eager = _run(core, x, is_first)
    compiled = _run(torch.compile(core), x, is_first)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for u, v in zip(eager[3], compiled[3]):
        torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # inductor compiles a whole model, ~25 s
def test_compiled_actor_critic_matches_eager():
    """A whole model (encoder, native core, heads) compiled with inductor."""
    from rlgate.agents.actor_critic import build_model
    from rlgate.config import TrainConfig
    from rlgate.envs import make_vec

    cfg = TrainConfig(env="rlgate/MemoryS7-v0", num_envs=4, unroll_length=8)
    env = make_vec(cfg.env, 4, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg, env)
    obs, _ = env.reset()
    obs = {k: v.unsqueeze(0).expand(5, *v.shape).contiguous() for k, v in obs.items()}
    prev_a = torch.zeros(5, 4, dtype=torch.long)
    prev_r = torch.zeros(5, 4)
    first = torch.zeros(5, 4, dtype=torch.bool)
    first[0] = True
    state = model.initial_state(4, "cpu")
    eager = model(obs, prev_a, prev_r, first, state)
    compiled = torch.compile(model)(obs, prev_a, prev_r, first, state)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-6)
