"""GAE and V-trace against deliberately naive loops written like the papers' formulas."""

from __future__ import annotations

import math

import torch

from rlgate.returns import gae, vtrace


def _data(t_len=9, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(t_len, batch, generator=g, dtype=torch.float64)
    values = torch.randn(t_len, batch, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(batch, generator=g, dtype=torch.float64)
    done = torch.rand(t_len, batch, generator=g) < 0.2
    discounts = 0.9 * (~done).double()
    return rewards, values, bootstrap, discounts


def test_gae_matches_the_sum_of_discounted_td_errors():
    rewards, values, bootstrap, discounts = _data()
    lam = 0.8
    adv, ret = gae(rewards, values, bootstrap, discounts, lam)
    t_len, batch = rewards.shape
    v_next = lambda t, b: values[t + 1, b] if t + 1 < t_len else bootstrap[b]  # noqa: E731
    for b in range(batch):
        for t in range(t_len):
            # A_t = sum_k (prod_{j<k} gamma_j lam) delta_{t+k}, the sum cut at episode ends
            total, weight = 0.0, 1.0
            for k in range(t, t_len):
                delta = rewards[k, b] + discounts[k, b] * v_next(k, b) - values[k, b]
                total += weight * delta
                weight *= discounts[k, b] * lam
            assert math.isclose(adv[t, b], total, rel_tol=1e-9, abs_tol=1e-12)
    torch.testing.assert_close(ret, adv + values)


def test_gae_with_lambda_one_is_the_discounted_return():
    rewards, values, bootstrap, discounts = _data(seed=1)
    _, ret = gae(rewards, values, bootstrap, discounts, 1.0)
    t_len, batch = rewards.shape
    for b in range(batch):
        g = bootstrap[b].item()
        for t in reversed(range(t_len)):
            g = rewards[t, b].item() + discounts[t, b].item() * g
            assert math.isclose(ret[t, b], g, rel_tol=1e-9, abs_tol=1e-12)


def _naive_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, pg_rho_bar, c_bar):
    """Espeholt et al. eq. (1), literally: v_s = V(x_s) + sum_t gamma^{t-s} (prod c) delta_t."""
    t_len, batch = rewards.shape
    rhos = log_rhos.exp()
    v_next = lambda t, b: values[t + 1, b] if t + 1 < t_len else bootstrap[b]  # noqa: E731
    vs = torch.zeros_like(values)
    for b in range(batch):
        for s in range(t_len):
            total, coef = 0.0, 1.0
            for t in range(s, t_len):
                delta = min(rho_bar, rhos[t, b].item()) * (
                    rewards[t, b] + discounts[t, b] * v_next(t, b) - values[t, b]
                )
                total += coef * delta
                coef *= discounts[t, b] * min(c_bar, rhos[t, b].item())
            vs[s, b] = values[s, b] + total
    adv = torch.zeros_like(values)
    for b in range(batch):
        for s in range(t_len):
            v_s1 = vs[s + 1, b] if s + 1 < t_len else bootstrap[b]
            rho = min(pg_rho_bar, rhos[s, b].item())
            adv[s, b] = rho * (rewards[s, b] + discounts[s, b] * v_s1 - values[s, b])
    return vs, adv


def test_vtrace_matches_the_paper_formula():
    rewards, values, bootstrap, discounts = _data(seed=2)
    g = torch.Generator().manual_seed(3)
    log_rhos = torch.randn(rewards.shape, generator=g, dtype=torch.float64)
    out = vtrace(log_rhos, discounts, rewards, values, bootstrap, 1.0, 0.8, 0.9)
    vs, adv = _naive_vtrace(log_rhos, discounts, rewards, values, bootstrap, 1.0, 0.8, 0.9)
    torch.testing.assert_close(out.vs, vs)
    torch.testing.assert_close(out.pg_advantages, adv)


def test_on_policy_vtrace_is_the_n_step_return():
    rewards, values, bootstrap, discounts = _data(seed=4)
    out = vtrace(torch.zeros_like(rewards), discounts, rewards, values, bootstrap)
    t_len, batch = rewards.shape
    for b in range(batch):
        g = bootstrap[b].item()
        for t in reversed(range(t_len)):
            g = rewards[t, b].item() + discounts[t, b].item() * g
            assert math.isclose(out.vs[t, b], g, rel_tol=1e-9, abs_tol=1e-12)
