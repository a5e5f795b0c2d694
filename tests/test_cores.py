"""The cores against independent references: torch.nn.LSTM/GRU, the paper's formulas, the
reference loop, and plain distribution checks."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from rlgate.cores import CORES, RECURRENT, make_core
from rlgate.cores.gates import cumax, refine_gate
from rlgate.cores.gru import GRUCore
from rlgate.cores.lstm import LSTMCore

PRESETS = sorted(RECURRENT)  # the memoryless mlp has its own tests below
REFINED = [n for n in PRESETS if CORES[n].refine]


def _options(name: str, hidden: int) -> dict:
    # om-lstm needs a chunk size dividing H; 33 = 3 * 11 exercises chunking at an odd size.
    return {"chunk_size": 3} if CORES[name].master and hidden % 3 == 0 else {}


def _core(name, input_size=5, hidden=33, backend="auto", seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    core = make_core(name, input_size, hidden, backend=backend, **_options(name, hidden))
    return core.to(dtype)


def _random_state(core, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    st = core.initial_state(batch)
    return type(st)(*(torch.randn(s.shape, generator=g, dtype=s.dtype) * 0.5 for s in st))


# ---------------------------------------------------------------- registry and options
def test_registry_has_every_preset_and_alias():
    expected = {
        "lstm",
        "c-lstm",
        "om-lstm",
        "u-lstm",
        "r-lstm",
        "ur-lstm",
        "o-lstm",
        "or-lstm",
        "gru",
        "ur-gru",
        "mlp",
        "chrono",
        "chrono-lstm",
        "on-lstm",
        "ff",
    }
    assert set(CORES) == expected
    assert CORES["chrono"] is CORES["c-lstm"] and CORES["on-lstm"] is CORES["om-lstm"]
    assert CORES["ff"] is CORES["mlp"] and set(RECURRENT) == {p.name for p in CORES.values()} - {
        "mlp"
    }
    with pytest.raises(TypeError):
        CORES["mine"] = CORES["lstm"]  # read-only


def test_unknown_core_and_option_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid cores: lstm, c-lstm"):
        make_core("ur-lstmm", 3, 4)
    with pytest.raises(ValueError, match="valid options: backend, tie_refine_bias"):
        make_core("ur-lstm", 3, 4, chunk_size=2)
    with pytest.raises(ValueError, match="valid backends"):
        make_core("lstm", 3, 4, backend="cudnn")
    with pytest.raises(ValueError, match="chunk_size must divide"):
        make_core("om-lstm", 3, 10, chunk_size=3)
    with pytest.raises(ValueError, match="chrono_t_max"):
        make_core("c-lstm", 3, 10, chrono_t_max=1.5)


def test_parameter_counts_follow_the_paper():
    n = lambda core: sum(p.numel() for p in core.parameters())  # noqa: E731
    i, h = 7, 16
    assert n(make_core("ur-lstm", i, h)) == n(make_core("lstm", i, h))  # r takes i's block
    assert n(make_core("u-lstm", i, h)) == 3 * h * (i + h + 1)
    assert n(make_core("ur-gru", i, h)) == n(make_core("gru", i, h)) + h * (i + h + 2)


# ---------------------------------------------------------------- the contract, every preset
@pytest.mark.parametrize("name", PRESETS)
def test_forward_equals_step_loop(name):
    core = _core(name)
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    state = _random_state(core, 4)
    y, final = core(x, state)
    st, ys = state, []
    for x_t in x:
        y_t, st = core.step(x_t, st)
        ys.append(y_t)
    torch.testing.assert_close(y, torch.stack(ys))
    for a, b in zip(final, st):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", PRESETS)
def test_is_first_resets_to_a_fresh_run(name, backend):
    core = _core(name, backend=backend)
    t_len, batch, cut = 8, 3, 5
    x = torch.randn(t_len, batch, 5, dtype=torch.float64)
    is_first = torch.zeros(t_len, batch, dtype=torch.bool)
    is_first[cut, 1] = True
    y, _ = core(x, _random_state(core, batch), is_first)
    fresh, _ = core(x[cut:, 1:2], core.initial_state(1))
    torch.testing.assert_close(y[cut:, 1:2], fresh)
    # The other columns do not see the reset.
    y_no, _ = core(x, _random_state(core, batch))
    torch.testing.assert_close(y[:, 0], y_no[:, 0])
    assert not torch.allclose(y[cut:, 1], y_no[cut:, 1])


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_reach_every_parameter(name):
    core = _core(name, backend="fused", dtype=torch.float32)
    x = torch.randn(5, 3, 5)
    y, (h, *_) = core(x, core.initial_state(3))
    (y.sum() + h.sum()).backward()
    for pname, p in core.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", PRESETS)
def test_fused_matches_reference(name, scattered_resets):
    """Outputs, final state and every gradient, float64, resets at scattered (t, b), H = 33."""
    core = _core(name, input_size=6, hidden=33)
    t_len, batch = 11, 5
    x = torch.randn(t_len, batch, 6, dtype=torch.float64, requires_grad=True)
    state = tuple(s.requires_grad_() for s in _random_state(core, batch))
    is_first = scattered_resets(t_len, batch)
    w_y = torch.randn(t_len, batch, 33, dtype=torch.float64)
    w_s = [torch.randn(batch, 33, dtype=torch.float64) for _ in state]
    results = {}
    for backend in ("reference", "fused"):
        core.backend = backend
        y, final = core(x, state, is_first)
        loss = (y * w_y).sum() + sum((s * w).sum() for s, w in zip(final, w_s))
        grads = torch.autograd.grad(loss, [x, *state, *core.parameters()])
        results[backend] = (y, final, grads)
    ref, fus = results["reference"], results["fused"]
    torch.testing.assert_close(fus[0], ref[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(fus[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    names = ["x"] + [f"state.{f}" for f in type(core.initial_state(1))._fields]
    names += [n for n, _ in core.named_parameters()]
    for n, a, b in zip(names, fus[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", ["ur-lstm", "om-lstm", "or-lstm", "ur-gru"])
def test_fused_backward_passes_gradcheck(name):
    core = _core(name, input_size=3, hidden=6)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    is_first = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=torch.bool)
    state = tuple(s.requires_grad_() for s in _random_state(core, 2))
    core.backend = "fused"

    def fn(x, *state):
        y, final = core(x, state, is_first)
        return (y, *final)

    assert torch.autograd.gradcheck(fn, (x, *state))


# ---------------------------------------------------------------- parity with torch.nn
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_lstm_matches_torch_nn_lstm(backend):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 33).double()
    core = LSTMCore.from_torch(ref, backend=backend)
    assert core.preset.name == "lstm" and core.weight_hh.dtype == torch.float64
    x = torch.randn(9, 4, 5, dtype=torch.float64, requires_grad=True)
    h0, c0 = _random_state(core, 4)
    y_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    y, (h, c) = core(x, (h0, c0))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref[0])
    torch.testing.assert_close(c, c_ref[0])
    g_ref = torch.autograd.grad(y_ref.sum(), [x, ref.weight_hh_l0])
    g = torch.autograd.grad(y.sum(), [x, core.weight_hh])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_gru_matches_torch_nn_gru(backend):
    torch.manual_seed(0)
    ref = torch.nn.GRU(5, 33).double()
    core = GRUCore.from_torch(ref, backend=backend)
    assert core.preset.name == "gru" and core.weight_hh.dtype == torch.float64
    x = torch.randn(9, 4, 5, dtype=torch.float64, requires_grad=True)
    (h0,) = _random_state(core, 4)
    y_ref, h_ref = ref(x, h0[None])
    y, (h,) = core(x, (h0,))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref[0])
    g_ref = torch.autograd.grad(y_ref.sum(), [x, ref.weight_hh_l0, ref.bias_hh_l0])
    g = torch.autograd.grad(y.sum(), [x, core.weight_hh, core.bias_hh])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_from_torch_refuses_what_a_core_cannot_hold():
    for rnn, message in (
        (torch.nn.LSTM(5, 8, num_layers=2), "num_layers=2"),
        (torch.nn.LSTM(5, 8, bidirectional=True), "bidirectional=True"),
        (torch.nn.LSTM(5, 8, bias=False), "bias=False"),
        (torch.nn.LSTM(5, 8, proj_size=4), "proj_size=4"),
        (torch.nn.GRU(5, 8), r"expected a torch\.nn\.LSTM"),
    ):
        with pytest.raises(ValueError, match=message):
            LSTMCore.from_torch(rnn)
    with pytest.raises(ValueError, match=r"expected a torch\.nn\.GRU"):
        GRUCore.from_torch(torch.nn.LSTM(5, 8))


# ---------------------------------------------------------------- the equations
@pytest.mark.parametrize("name", PRESETS)
def test_gates_report_f_g_and_r(name):
    core = _core(name)
    x_t = torch.randn(4, 5, dtype=torch.float64)
    gates = core.gates(x_t, _random_state(core, 4))
    expected = {"f", "g", "r"} if CORES[name].refine else {"f", "g"}
    assert set(gates) == expected
    for v in gates.values():
        assert v.shape == (4, 33) and ((v >= 0) & (v <= 1 + 1e-12)).all()
    if not CORES[name].refine and not CORES[name].master:
        torch.testing.assert_close(gates["g"], gates["f"])


@pytest.mark.parametrize("name", REFINED)
def test_effective_gate_is_the_paper_formula(name):
    core = _core(name)
    gates = core.gates(torch.randn(8, 5, dtype=torch.float64) * 2, _random_state(core, 8))
    f, r = gates["f"], gates["r"]
    torch.testing.assert_close(gates["g"], f**2 + 2 * r * f * (1 - f))
    torch.testing.assert_close(gates["g"], r * (1 - (1 - f) ** 2) + (1 - r) * f**2)


def test_refine_gate_with_r_one_half_is_f():
    f = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(refine_gate(f, torch.full_like(f, 0.5)), f)


def _ks_uniform(samples: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance of samples to U[lo, hi]."""
    x, _ = torch.sort(samples.double())
    n = x.numel()
    cdf = ((x - lo) / (hi - lo)).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


@pytest.mark.parametrize("name", ["u-lstm", "ur-lstm", "ur-gru"])
def test_ugi_initial_forget_gate_is_uniform(name):
    hidden = 2000
    core = _core(name, input_size=3, hidden=hidden)
    f = core.gates(torch.zeros(1, 3, dtype=torch.float64), core.initial_state(1))["f"][0]
    assert f.min() >= 1 / hidden and f.max() <= 1 - 1 / hidden
    # KS test at 1%: the critical distance is 1.63 / sqrt(n).
    assert _ks_uniform(f, 1 / hidden, 1 - 1 / hidden) < 1.63 / math.sqrt(hidden)
    # and it is not what a plain LSTM does (all units at sigmoid(1)):
    plain = _core("lstm", input_size=3, hidden=hidden)
    f_plain = plain.gates(torch.zeros(1, 3, dtype=torch.float64), plain.initial_state(1))["f"][0]
    assert _ks_uniform(f_plain, 1 / hidden, 1 - 1 / hidden) > 0.5


def test_ugi_is_drawn_once_and_saved():
    core = _core("ur-lstm", hidden=64)
    b_f = core.bias[core.blocks["f"]].detach().clone()
    x = torch.randn(5, 2, 5, dtype=torch.float64)
    core(x, core.initial_state(2))
    torch.testing.assert_close(core.bias[core.blocks["f"]], b_f)  # not re-drawn per sequence
    other = _core("ur-lstm", hidden=64, seed=5)
    other.load_state_dict(core.state_dict())
    torch.testing.assert_close(other.bias[other.blocks["f"]], b_f)
    # refine bias initialised to -b_f (docs/gates.md, the refine gate), independent parameters
    # afterwards
    torch.testing.assert_close(core.bias[core.blocks["r"]], -b_f)
    untied = make_core("ur-lstm", 5, 64, tie_refine_bias=False)
    assert untied.bias[untied.blocks["r"]].abs().max() == 0


def test_chrono_bias_range_and_distribution():
    hidden, t_max = 2000, 50.0
    core = make_core("chrono", 3, hidden, chrono_t_max=t_max)
    b_f = core.bias[core.blocks["f"]].detach().double()
    b_i = core.bias[core.blocks["i"]].detach().double()
    assert b_f.min() >= 0 and b_f.max() <= math.log(t_max - 1)
    torch.testing.assert_close(b_i, -b_f)
    # exp(b_f) ~ U[1, T_max - 1]
    assert _ks_uniform(b_f.exp(), 1.0, t_max - 1) < 1.63 / math.sqrt(hidden)
    others = torch.cat([core.bias[core.blocks[k]] for k in ("u", "o")])
    assert others.abs().max() == 0


def test_cumax_is_monotone_in_unit_interval():
    z = torch.randn(16, 24, dtype=torch.float64) * 3
    y = cumax(z)
    assert (y.diff(dim=-1) >= 0).all() and (y >= 0).all() and (y <= 1 + 1e-12).all()
    torch.testing.assert_close(y[:, -1], torch.ones(16, dtype=torch.float64))
    chunked = cumax(z[:, :8], chunk_size=3)
    assert chunked.shape == (16, 24)
    torch.testing.assert_close(chunked[:, 0::3], cumax(z[:, :8]))
    core = _core("o-lstm")
    f = core.gates(torch.randn(4, 5, dtype=torch.float64), _random_state(core, 4))["f"]
    assert (f.diff(dim=-1) >= 0).all()


def test_refine_gate_steepens_near_saturation():
    """Near saturation dg/d(forget pre-activation) exceeds a plain sigmoid's at the same value.

    Through the core: zero weights, forget and refine biases on a grid of saturated values
    (r saturating with f, as learning drives it, and r = 1)."""
    hidden = 64
    core = make_core("ur-lstm", 2, hidden, backend="reference").double()
    pre = torch.linspace(2.5, 6.0, hidden, dtype=torch.float64)
    for r_bias in (pre, torch.full_like(pre, 30.0)):
        with torch.no_grad():
            core.weight_ih.zero_()
            core.weight_hh.zero_()
            core.bias.zero_()
            core.bias[core.blocks["f"]] = pre
            core.bias[core.blocks["r"]] = r_bias
        state = core.initial_state(1)
        _, gates = core._cell(torch.zeros(1, 2, dtype=torch.float64), state)
        g = gates["g"][0]
        (dg_dpre,) = torch.autograd.grad(g.sum(), core.bias)
        dg_dpre = dg_dpre[core.blocks["f"]]
        plain = g * (1 - g)  # sigmoid'(a) where sigmoid(a) = g
        assert (g > 0.9).all()
        assert (dg_dpre > 1.05 * plain.detach()).all()


# ---------------------------------------------------------------- backends
def test_backend_choice_is_never_silent(caplog):
    core = make_core("ur-lstm", 3, 4)
    x = torch.randn(2, 1, 3)
    with caplog.at_level(logging.INFO, logger="rlgate.cores.backends"):
        core(x, core.initial_state(1))
    assert "picked native" in caplog.text
    half = make_core("ur-lstm", 3, 4, backend="fused").half()
    with pytest.raises(RuntimeError, match="unavailable"):
        half(x.half(), half.initial_state(1))
    auto_half = make_core("ur-lstm", 3, 4).half()
    with caplog.at_level(logging.INFO, logger="rlgate.cores.backends"):
        caplog.clear()
        auto_half(x.half(), auto_half.initial_state(1))
    assert "picked reference" in caplog.text


def test_bad_shapes_are_rejected():
    core = make_core("lstm", 3, 4)
    with pytest.raises(ValueError, match=r"\[T, B, 3\]"):
        core(torch.randn(2, 3), core.initial_state(3))
    with pytest.raises(ValueError, match="is_first"):
        core(torch.randn(2, 1, 3), core.initial_state(1), torch.zeros(3, 1, dtype=torch.bool))


# ---------------------------------------------------------------- the memoryless control
def test_mlp_core_is_a_tanh_layer_of_each_step_alone():
    core = make_core("mlp", 5, 7)
    x = torch.randn(6, 3, 5)
    is_first = torch.rand(6, 3) < 0.3
    y, state = core(x, core.initial_state(3), is_first)
    assert state == () and y.shape == (6, 3, 7)
    expected = torch.stack(
        [torch.tanh(x[t] @ core.linear.weight.t() + core.linear.bias) for t in range(6)]
    )
    torch.testing.assert_close(y, expected)
    # no memory: a step's output does not depend on what came before it
    y_last, _ = core(x[-1:], core.initial_state(3))
    torch.testing.assert_close(y_last[0], y[-1])
    torch.testing.assert_close(core.step(x[0], ())[0], y[0])
    assert core.gates(x[0], ()) == {}


def test_mlp_core_refuses_kernels_it_does_not_have():
    from rlgate.cores.backends import BackendUnavailable

    for backend in ("native", "triton"):
        with pytest.raises(BackendUnavailable, match="no recurrence"):
            make_core("mlp", 5, 7, backend=backend)
    with pytest.raises(ValueError, match="valid options: backend"):
        make_core("mlp", 5, 7, forget_bias=1.0)
