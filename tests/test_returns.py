"""GAE and V-trace against deliberately naive loops written like the papers' formulas, and
against TorchRL's functional estimators, with both kinds of episode end (terminated: nothing
follows; truncated by a time limit: bootstrap from the final observation's value)."""

from __future__ import annotations

import math

import pytest
import torch

from rlgate.returns import gae, next_state_values, vtrace

GAMMA = 0.9


def _data(t_len=9, batch=4, seed=0):
    """Rewards, values, next values (with final-observation values where truncated),
    terminated and truncated, [T, B] float64."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(t_len, batch, generator=g, dtype=torch.float64)
    values = torch.randn(t_len, batch, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(batch, generator=g, dtype=torch.float64)
    final = torch.randn(t_len, batch, generator=g, dtype=torch.float64)
    end = torch.rand(t_len, batch, generator=g)
    terminated, truncated = end < 0.15, (end >= 0.15) & (end < 0.3)
    assert terminated.any() and truncated.any()
    next_values = next_state_values(values, bootstrap, truncated, final)
    return rewards, values, next_values, terminated, truncated


def test_next_state_values_shift_and_take_final_values_at_truncations():
    values = torch.tensor([[1.0], [2.0], [3.0]])
    truncated = torch.tensor([[False], [True], [False]])
    final = torch.tensor([[9.0], [7.0], [9.0]])
    out = next_state_values(values, torch.tensor([4.0]), truncated, final)
    assert out.flatten().tolist() == [2.0, 7.0, 4.0]


def test_gae_matches_the_sum_of_discounted_td_errors():
    rewards, values, next_values, term, trunc = _data()
    lam = 0.8
    adv, ret = gae(rewards, values, next_values, term, trunc, GAMMA, lam)
    t_len, batch = rewards.shape
    for b in range(batch):
        for t in range(t_len):
            # A_t = sum_k (gamma lam)^(k-t) delta_k, the sum cut after an episode's end;
            # delta_k bootstraps unless the episode terminated at k
            total, weight = 0.0, 1.0
            for k in range(t, t_len):
                keep = 0.0 if term[k, b] else GAMMA
                delta = rewards[k, b] + keep * next_values[k, b] - values[k, b]
                total += weight * delta
                if term[k, b] or trunc[k, b]:
                    break
                weight *= GAMMA * lam
            assert math.isclose(adv[t, b], total, rel_tol=1e-9, abs_tol=1e-12)
    torch.testing.assert_close(ret, adv + values)


def test_gae_with_lambda_one_is_the_discounted_return():
    rewards, values, next_values, term, trunc = _data(seed=1)
    _, ret = gae(rewards, values, next_values, term, trunc, GAMMA, 1.0)
    t_len, batch = rewards.shape
    for b in range(batch):
        g = next_values[-1, b].item()
        for t in reversed(range(t_len)):
            if term[t, b]:
                g = 0.0
            elif trunc[t, b]:
                g = next_values[t, b].item()  # the time limit: what the final obs is worth
            g = rewards[t, b].item() + (0.0 if term[t, b] else GAMMA) * g
            assert math.isclose(ret[t, b], g, rel_tol=1e-9, abs_tol=1e-12)


def _naive_vtrace(log_rhos, rewards, values, next_values, term, trunc, rho_bar, pg_bar, c_bar):
    """Espeholt et al. eq. (1), literally: v_s = V(x_s) + sum_t gamma^{t-s} (prod c) delta_t,
    the sum cut after an episode's end."""
    t_len, batch = rewards.shape
    rhos = log_rhos.exp()
    vs = torch.zeros_like(values)
    for b in range(batch):
        for s in range(t_len):
            total, coef = 0.0, 1.0
            for t in range(s, t_len):
                keep = 0.0 if term[t, b] else GAMMA
                rho = min(rho_bar, rhos[t, b].item())
                total += coef * rho * (rewards[t, b] + keep * next_values[t, b] - values[t, b])
                if term[t, b] or trunc[t, b]:
                    break
                coef *= GAMMA * min(c_bar, rhos[t, b].item())
            vs[s, b] = values[s, b] + total
    adv = torch.zeros_like(values)
    for b in range(batch):
        for s in range(t_len):
            ended = term[s, b] or trunc[s, b] or s + 1 == t_len
            v_s1 = next_values[s, b] if ended else vs[s + 1, b]
            keep = 0.0 if term[s, b] else GAMMA
            rho = min(pg_bar, rhos[s, b].item())
            adv[s, b] = rho * (rewards[s, b] + keep * v_s1 - values[s, b])
    return vs, adv


def test_vtrace_matches_the_paper_formula():
    rewards, values, next_values, term, trunc = _data(seed=2)
    g = torch.Generator().manual_seed(3)
    log_rhos = torch.randn(rewards.shape, generator=g, dtype=torch.float64)
    out = vtrace(log_rhos, rewards, values, next_values, term, trunc, GAMMA, 1.0, 0.8, 0.9)
    args = (log_rhos, rewards, values, next_values, term, trunc)
    vs, adv = _naive_vtrace(*args, 1.0, 0.8, 0.9)
    torch.testing.assert_close(out.vs, vs)
    torch.testing.assert_close(out.pg_advantages, adv)


def test_on_policy_vtrace_is_the_lambda_one_return():
    rewards, values, next_values, term, trunc = _data(seed=4)
    out = vtrace(torch.zeros_like(rewards), rewards, values, next_values, term, trunc, GAMMA)
    _, ret = gae(rewards, values, next_values, term, trunc, GAMMA, 1.0)
    torch.testing.assert_close(out.vs, ret)


# ---------------------------------------------------------------- TorchRL's estimators
def _batch_major(x):
    """[T, B] -> TorchRL's [B, T, 1]."""
    return x.t().unsqueeze(-1)


@pytest.mark.parametrize("seed", [0, 5])
def test_gae_equals_torchrls(seed):
    functional = pytest.importorskip("torchrl.objectives.value.functional")
    rewards, values, next_values, term, trunc = _data(t_len=17, batch=6, seed=seed)
    adv, ret = gae(rewards, values, next_values, term, trunc, GAMMA, 0.95)
    ref_adv, ref_ret = functional.generalized_advantage_estimate(
        GAMMA,
        0.95,
        _batch_major(values),
        _batch_major(next_values),
        _batch_major(rewards),
        done=_batch_major(term | trunc),
        terminated=_batch_major(term),
    )
    # TorchRL's GAE carries its discount in float32: agreement to float32 rounding
    torch.testing.assert_close(_batch_major(adv), ref_adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_batch_major(ret), ref_ret, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 5])
def test_vtrace_equals_torchrls(seed):
    functional = pytest.importorskip("torchrl.objectives.value.functional")
    rewards, values, next_values, term, trunc = _data(t_len=17, batch=6, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    log_mu = -torch.rand(rewards.shape, generator=g, dtype=torch.float64)
    log_pi = log_mu + 0.5 * torch.randn(rewards.shape, generator=g, dtype=torch.float64)
    # TorchRL clips the advantages' rho with rho_thresh: the same threshold for both here
    out = vtrace(log_pi - log_mu, rewards, values, next_values, term, trunc, GAMMA, 0.9, 0.9, 0.8)
    ref_adv, ref_vs = functional.vtrace_advantage_estimate(
        GAMMA,
        _batch_major(log_pi),
        _batch_major(log_mu),
        _batch_major(values),
        _batch_major(next_values),
        _batch_major(rewards),
        done=_batch_major(term | trunc),
        terminated=_batch_major(term),
        rho_thresh=0.9,
        c_thresh=0.8,
    )
    torch.testing.assert_close(_batch_major(out.vs), ref_vs)
    torch.testing.assert_close(_batch_major(out.pg_advantages), ref_adv)
