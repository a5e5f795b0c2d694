"""The native CPU kernels (rlgate/cores/native.c) against the reference loop, and how they are
built, cached, chosen and refused."""

from __future__ import annotations

import logging

import pytest
import torch

from rlgate.cores import CORES, fused_native, make_core, native

# every preset the native kernels cover, with the options that exercise their layouts
COVERED = [
    ("lstm", {}),
    ("c-lstm", {}),
    ("u-lstm", {}),
    ("r-lstm", {}),
    ("ur-lstm", {}),
    ("om-lstm", {}),
    ("om-lstm", {"chunk_size": 3}),
    ("gru", {}),
    ("ur-gru", {}),
]
# hidden sizes: odd (33) everywhere; om-lstm also with master widths that are multiples of 8,
# which take native.c's other prefix-sum loop
HIDDEN = {("om-lstm", ()): (33, 32), ("om-lstm", ("chunk_size",)): (33, 48)}
NOT_COVERED = ["o-lstm", "or-lstm"]  # cumax forget gates: the PyTorch fused path


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """native's loader with an empty cache folder; restored afterwards."""
    monkeypatch.setenv("RLGATE_CACHE_DIR", str(tmp_path))
    native._load.cache_clear()
    yield tmp_path
    native._load.cache_clear()


@pytest.fixture(params=["sequence", "blas", "steps"])
def native_loop(request, monkeypatch):
    """The three loops of the native kernels: the whole sequence in one call with native.c's
    own matmul ("sequence") or torch's BLAS sgemm ("blas"), and step by step (oneDNN matmuls
    from Python); records the sequence calls and whether they got the sgemm."""
    loop = request.param
    if loop == "blas" and native.blas_sgemm() is None:
        pytest.skip("torch exports no BLAS sgemm here")
    monkeypatch.setattr(fused_native, "SEQUENCE_MACS", 1 << 62 if loop == "sequence" else 0)
    monkeypatch.setattr(fused_native, "BLAS_MACS", 1 << 62 if loop == "blas" else 0)
    calls = []
    for cls in (fused_native.NativeLSTMKernel, fused_native.NativeGRUKernel):
        for method in ("forward_sequence", "backward_sequence"):
            original = getattr(cls, method)

            def spy(self, *args, _original=original, _method=method):
                calls.append((_method, self.gemm is not None))
                return _original(self, *args)

            monkeypatch.setattr(cls, method, spy)
    return request.param, calls


def _run(core, x, state, is_first, w_y, w_s):
    y, final = core(x, state, is_first)
    loss = (y * w_y).sum() + sum((s * w).sum() for s, w in zip(final, w_s))
    grads = torch.autograd.grad(loss, [x, *state, *core.parameters()])
    return y, final, grads


@pytest.mark.parametrize(("name", "options"), COVERED, ids=[f"{n}{o}" for n, o in COVERED])
def test_native_matches_reference(name, options, scattered_resets, native_loop):
    """float32 native vs the float64 reference loop on the same weights: outputs, final state
    and every gradient, resets at scattered (t, b), odd H = 33, two batch sizes; both loops.
    H = 33 and B = 5, 19 also leave partial blocks in native.c's small_matmul."""
    loop, calls = native_loop
    for hidden in HIDDEN.get((name, tuple(options)), (33,)):
        _check_native_against_reference(name, options, hidden, scattered_resets)
    if loop == "steps":
        assert calls == []
    else:
        blas = loop == "blas"
        assert ("forward_sequence", blas) in calls and ("backward_sequence", blas) in calls
        assert all(gemm == blas for _, gemm in calls)


def _check_native_against_reference(name, options, hidden, scattered_resets):
    for batch in (5, 19):
        torch.manual_seed(batch)
        core = make_core(name, 6, hidden, backend="native", **options)
        ref = make_core(name, 6, hidden, backend="reference", **options).double()
        ref.load_state_dict(core.state_dict())
        t_len = 11
        x = torch.randn(t_len, batch, 6)
        state = [torch.randn(batch, hidden) * 0.5 for _ in core.initial_state(1)]
        is_first = scattered_resets(t_len, batch)
        w_y = torch.randn(t_len, batch, hidden)
        w_s = [torch.randn(batch, hidden) for _ in state]
        got = _run(
            core, x.requires_grad_(), [s.requires_grad_() for s in state], is_first, w_y, w_s
        )
        want = _run(
            ref,
            x.detach().double().requires_grad_(),
            [s.detach().double().requires_grad_() for s in state],
            is_first,
            w_y.double(),
            [w.double() for w in w_s],
        )
        assert core.resolve_backend(x) == "native"
        tol = {"rtol": 1e-4, "atol": 2e-5}
        torch.testing.assert_close(got[0].double(), want[0], **tol)
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a.double(), b, **tol)
        names = ["x"] + [f"state.{f}" for f in type(core.initial_state(1))._fields]
        names += [n for n, _ in core.named_parameters()]
        for n, a, b in zip(names, got[2], want[2]):
            torch.testing.assert_close(a.double(), b, **tol, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize(("name", "options"), COVERED, ids=[f"{n}{o}" for n, o in COVERED])
def test_no_grad_forward_is_the_autograd_one_to_the_bit(name, options, scattered_resets):
    """Acting runs the recurrence without its autograd Function (``recurrence.run`` under
    no_grad): the same outputs and final state, bit for bit, at T = 1 and over a sequence."""
    torch.manual_seed(0)
    core = make_core(name, 6, 33, backend="native", **options)
    for t_len, batch in ((1, 19), (9, 5)):
        x = torch.randn(t_len, batch, 6)
        state = core.initial_state(batch)
        state = type(state)(*(torch.randn_like(s) for s in state))
        is_first = scattered_resets(t_len, batch)
        y, final = core(x.requires_grad_(), state, is_first)
        with torch.no_grad():
            y0, final0 = core(x, state, is_first)
        assert torch.equal(y0, y.detach())
        assert all(torch.equal(a, b.detach()) for a, b in zip(final0, final))


@pytest.mark.parametrize("name", ["ur-lstm", "om-lstm", "ur-gru"])
def test_native_lets_nan_through(name):
    """A non-finite pre-activation must not be clamped into a finite output (the training loop
    stops on a non-finite loss)."""
    core = make_core(name, 4, 8, backend="native")
    with torch.no_grad():
        core.weight_ih[0, 0] = float("nan")
    x = torch.randn(3, 2, 4, requires_grad=True)
    y, _ = core(x, core.initial_state(2))
    assert torch.isnan(y).any()
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert torch.isnan(gx).any()


def test_auto_and_fused_pick_native_and_say_so(caplog):
    for name, options in COVERED:
        core = make_core(name, 3, 6, **options)
        with caplog.at_level(logging.INFO, logger="rlgate.cores.backends"):
            caplog.clear()
            core(torch.randn(2, 1, 3), core.initial_state(1))
        assert "picked native" in caplog.text, name
    # float64 and the cumax-forget cores take the PyTorch fused path, without a warning
    for name in NOT_COVERED:
        assert CORES[name].forget_act == "cumax"
        core = make_core(name, 3, 6, backend="fused")
        assert core.resolve_backend(torch.randn(2, 1, 3)) == "pytorch"
        with pytest.raises(RuntimeError, match="cumax forget gate"):
            make_core(name, 3, 6, backend="native")(torch.randn(2, 1, 3), core.initial_state(1))
    core = make_core("ur-lstm", 3, 6, backend="fused").double()
    assert core.resolve_backend(torch.randn(2, 1, 3, dtype=torch.float64)) == "pytorch"
    with pytest.raises(RuntimeError, match="native kernels take"):
        core = make_core("ur-lstm", 3, 6, backend="native").double()
        core(torch.randn(2, 1, 3, dtype=torch.float64), core.initial_state(1))


def test_without_a_compiler_fused_warns_and_native_refuses(fresh_native, monkeypatch, caplog):
    monkeypatch.setenv("CC", str(fresh_native / "no-such-cc"))
    ok, why = native.available()
    assert not ok and "no-such-cc" in why
    core = make_core("ur-lstm", 3, 6, backend="fused")
    x = torch.randn(2, 1, 3)
    with caplog.at_level(logging.INFO, logger="rlgate.cores.backends"):
        y, _ = core(x, core.initial_state(1))
    assert core.resolve_backend(x) == "pytorch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "picked pytorch" in warnings[0].getMessage()
    assert "no-such-cc" in warnings[0].getMessage()
    with pytest.raises(RuntimeError, match=r"backend='native' is unavailable here: .*no-such-cc"):
        make_core("ur-lstm", 3, 6, backend="native")(x, core.initial_state(1))
    # and the answer is the same as the kernels would give
    ref = make_core("ur-lstm", 3, 6, backend="reference")
    ref.load_state_dict(core.state_dict())
    torch.testing.assert_close(y, ref(x, ref.initial_state(1))[0])


def test_a_broken_compiler_is_reported(fresh_native, monkeypatch):
    fake = fresh_native / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fakecc: internal error' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    ok, why = native.available()
    assert not ok and "fakecc: internal error" in why


def test_kernels_are_compiled_once_and_cached(fresh_native, caplog):
    if native.compiler() is None:
        pytest.skip("no C compiler here")
    with caplog.at_level(logging.INFO, logger="rlgate.cores.native"):
        assert native.available() == (True, "")
    built = list(fresh_native.glob("native-*.so"))
    assert len(built) == 1 and "compiled native.c" in caplog.text
    assert not list(fresh_native.glob("*.tmp"))  # the temp file was renamed, not left behind
    mtime = built[0].stat().st_mtime_ns
    native._load.cache_clear()  # a new process: loads from the cache, compiles nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rlgate.cores.native"):
        assert native.available() == (True, "")
    assert "compiled" not in caplog.text and built[0].stat().st_mtime_ns == mtime


def test_linear_matches_a_plain_matmul():
    x, w, b = torch.randn(7, 5), torch.randn(3, 5), torch.randn(3)
    torch.testing.assert_close(native.linear(x, w, b), x @ w.t() + b)
    torch.testing.assert_close(native.linear(x, w), x @ w.t())


@pytest.mark.parametrize("batch", [64, 10])
@pytest.mark.parametrize(("name", "options"), COVERED, ids=[f"{n}{o}" for n, o in COVERED])
def test_native_rows_split_over_threads_change_nothing(name, options, native_loop, batch):
    """Rows are split over torch's OpenMP threads (where the build has OpenMP): the sequence
    loop's whole sequences (each thread its rows, in blocks of 4: 10 rows split 4 + 6), and
    above native.c's PARALLEL_MIN (B H = 64 x 264) the steps loop's gate math. Where native.c
    does the recurrence (the sequence and steps loops) the outputs and final states are
    bit-identical to one thread. The gradients of x and the weights are torch's matmuls over
    native.c's dL/dz, and in the blas loop torch's MKL sgemm does the recurrent matmul too: on
    some CPUs (an Intel Xeon, not an AMD EPYC) MKL sums in another order with another thread
    count, so those agree to fp32 rounding. In every loop two runs on two threads are
    bit-identical (no race). (At 10 rows the steps loop's oneDNN matmuls, not native.c, sum in
    another order with two threads, so 10 rows are the sequence loop's case alone.)"""
    loop, _ = native_loop
    if batch == 10 and loop != "sequence":
        pytest.skip("10 rows: the sequence loop's case")
    torch.manual_seed(0)
    core = make_core(name, 5, 264, backend="native", **options)
    x = torch.randn(6, batch, 5)
    is_first = torch.rand(6, batch) < 0.2
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_()
            core.zero_grad()
            y, final = core(xg, core.initial_state(batch), is_first)
            (y.square().sum() + sum(s.sum() for s in final)).backward()
            results.append([y, *final, xg.grad] + [p.grad for p in core.parameters()])
    finally:
        torch.set_num_threads(threads)
    one, two, again = results
    for i, (a, b, c) in enumerate(zip(one, two, again)):
        assert torch.equal(b, c)
        if loop == "blas" or i > len(final):  # a gradient
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
        else:
            assert torch.equal(a, b)


def test_one_openmp_runtime():
    """An OpenMP build of native.c shares torch's thread pool: one runtime in the process."""
    if not native.openmp():
        pytest.skip("native.c built without OpenMP here")
    assert len(native.openmp_runtimes()) == 1


@pytest.mark.parametrize("name", ["ur-lstm", "gru"])
def test_native_refuses_what_it_cannot_read(name):
    """The kernels trust their shapes: a state of the wrong size or dtype is refused before any
    raw pointer is handed over."""
    core = make_core(name, 8, 16, backend="native")
    x = torch.randn(4, 3, 8)
    good = core.initial_state(3)
    for bad in (torch.zeros(3, 17), torch.zeros(2, 16), torch.zeros(3, 16, dtype=torch.float64)):
        state = (bad, *good[1:])
        with pytest.raises(ValueError, match="native kernels"):
            fused_native.check_native_inputs(
                x, torch.zeros(4, 3, dtype=torch.bool), *core._weights(), *state
            )
        with pytest.raises((ValueError, RuntimeError)):
            core(x, state)
