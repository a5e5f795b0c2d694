"""The fused MLP heads against the modules themselves (autograd through nn.Linear and
nn.Tanh): outputs and every gradient, in float64 and float32, with and without a gradient."""

from __future__ import annotations

import pytest
import torch

from rlgate.agents.actor_critic import _head, _init_last
from rlgate.agents.heads import two_tanh_heads, two_tanh_heads_reference


def _heads(k: int, width: int, n_params: int, dtype: torch.dtype):
    torch.manual_seed(0)
    policy, value = _head(k, 0, width, n_params), _head(k, 0, width, 1)
    _init_last(policy, 1.0)
    _init_last(value, 1.0)
    for m in (policy, value):  # biases away from their zero init, so that their gradients count
        for lin in (m[0], m[2]):
            torch.nn.init.normal_(lin.bias)
    return policy.to(dtype), value.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("rows", "k", "width", "n_params"), [(37, 10, 8, 5), (256, 128, 64, 7)])
def test_fused_heads_match_the_modules(dtype, rows, k, width, n_params):
    policy, value = _heads(k, width, n_params, dtype)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(rows, k, generator=g, dtype=dtype)
    d_params = torch.randn(rows, n_params, generator=g, dtype=dtype)
    d_value = torch.randn(rows, 1, generator=g, dtype=dtype)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    results = []
    for fn in (two_tanh_heads_reference, two_tanh_heads):
        for p in [*policy.parameters(), *value.parameters()]:
            p.grad = None
        yg = y.clone().requires_grad_()
        params, values = fn(yg, policy, value)
        ((params * d_params).sum() + (values * d_value).sum()).backward()
        grads = [yg.grad] + [p.grad for p in [*policy.parameters(), *value.parameters()]]
        results.append((params, values, grads))
    (p_ref, v_ref, g_ref), (p_new, v_new, g_new) = results
    torch.testing.assert_close(p_new, p_ref, **tol)
    torch.testing.assert_close(v_new, v_ref, **tol)
    assert len(g_new) == len(g_ref) == 9
    for new, ref in zip(g_new, g_ref):
        torch.testing.assert_close(new, ref, **tol)
    with torch.no_grad():  # acting's path: the forward alone
        p_ng, v_ng = two_tanh_heads(y, policy, value)
    torch.testing.assert_close(p_ng, p_ref.detach(), **tol)
    torch.testing.assert_close(v_ng, v_ref.detach(), **tol)


def test_the_actor_critic_with_mlp_heads_runs_them_fused(monkeypatch):
    """An ActorCritic with head_size > 0 computes its heads through two_tanh_heads, and its
    outputs are the modules' own."""
    import gymnasium as gym

    from rlgate.agents import actor_critic

    calls = []
    real = actor_critic.two_tanh_heads
    monkeypatch.setattr(actor_critic, "two_tanh_heads", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = actor_critic.ActorCritic(
        gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4), "lstm", 8, 8, head_size=6
    )
    obs = {"obs": torch.randn(5, 2, 3)}
    prev_action, prev_reward = torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2)
    is_first = torch.zeros(5, 2, dtype=torch.bool)
    params, values, _ = model(obs, prev_action, prev_reward, is_first, model.initial_state(2))
    assert calls
    x = model.core_features(obs, prev_action, prev_reward)
    y, _ = model.core(x, model.initial_state(2), is_first)
    ref_p, ref_v = two_tanh_heads_reference(torch.cat([y, x], dim=-1), model.policy, model.value)
    torch.testing.assert_close(params, ref_p)
    torch.testing.assert_close(values, ref_v.squeeze(-1))
