"""The Triton kernels (backend="triton", the CUDA fused path) against the reference cells.

Without CUDA they run under Triton's interpreter on CPU tensors (conftest.py sets
TRITON_INTERPRET=1 for the whole test run); with CUDA the same tests run compiled on the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rlgate.cores import make_core

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIGMOID_PRESETS = ["lstm", "c-lstm", "u-lstm", "r-lstm", "ur-lstm", "gru", "ur-gru"]


def _pair(name, inputs, hidden, dtype=torch.float32):
    torch.manual_seed(0)
    ref = make_core(name, inputs, hidden, backend="reference").to(DEVICE)
    tri = make_core(name, inputs, hidden, backend="triton").to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    return ref, tri.to(dtype)


def _run(core, x, state, is_first, dtype, loss_on=("y", "state")):
    """Outputs, final state and gradients of x, the initial state and every parameter."""
    x = x.detach().to(dtype).requires_grad_()
    state = tuple(s.detach().to(dtype).requires_grad_() for s in state)
    y, final = core(x, state, is_first)
    gen = torch.Generator(device="cpu").manual_seed(1)
    loss = 0.0
    if "y" in loss_on:
        loss = loss + (y.float() * torch.randn(y.shape, generator=gen).to(DEVICE)).sum()
    if "state" in loss_on:
        for s in final:
            loss = loss + (s.float() * torch.randn(s.shape, generator=gen).to(DEVICE)).sum()
    grads = torch.autograd.grad(loss, [x, *state, *core.parameters()])
    return [y, *final], grads


def _inputs(t_len, batch, inputs, hidden, n_state):
    torch.manual_seed(2)
    x = torch.randn(t_len, batch, inputs, device=DEVICE)
    is_first = torch.rand(t_len, batch, device=DEVICE) < 0.25  # scattered (t, b), t = 0 too
    is_first[0, 0] = True
    state = tuple(torch.randn(batch, hidden, device=DEVICE) for _ in range(n_state))
    return x, is_first, state


def _assert_close(got, want, tol, what):
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol, msg=f"{what} {i}")


# H=5: one tile, padded units; H=70: two 64-unit tiles, padded; B=19: two batch blocks
@pytest.mark.parametrize("shape", [(5, 3, 4, 5), (6, 19, 3, 70)], ids=["small", "tiles"])
@pytest.mark.parametrize("name", SIGMOID_PRESETS)
def test_triton_equals_reference_with_resets(name, shape):
    t_len, batch, inputs, hidden = shape
    ref, tri = _pair(name, inputs, hidden)
    n_state = len(ref.initial_state(1))
    x, is_first, state = _inputs(t_len, batch, inputs, hidden, n_state)
    assert tri.resolve_backend(x) == "triton"
    out_ref, g_ref = _run(ref, x, state, is_first, torch.float32)
    out_tri, g_tri = _run(tri, x, state, is_first, torch.float32)
    _assert_close(out_tri, out_ref, 2e-5, "output/state")
    _assert_close(g_tri, g_ref, 5e-5, "gradient")


@pytest.mark.parametrize("loss_on", [("y",), ("state",)])
@pytest.mark.parametrize("name", ["ur-lstm", "ur-gru"])
def test_triton_gradients_when_only_outputs_or_only_the_state_matter(name, loss_on):
    ref, tri = _pair(name, 3, 9)
    x, is_first, state = _inputs(7, 4, 3, 9, len(ref.initial_state(1)))
    _, g_ref = _run(ref, x, state, is_first, torch.float32, loss_on)
    _, g_tri = _run(tri, x, state, is_first, torch.float32, loss_on)
    _assert_close(g_tri, g_ref, 5e-5, "gradient")


@pytest.mark.parametrize("name", ["lstm", "ur-lstm", "ur-gru"])
def test_triton_bf16_tracks_the_fp32_reference(name):
    """bf16 inputs and weights; the state and accumulation stay fp32 inside the kernels."""
    ref, tri = _pair(name, 6, 20, torch.bfloat16)
    x, is_first, state = _inputs(8, 5, 6, 20, len(ref.initial_state(1)))
    out_ref, g_ref = _run(ref, x, state, is_first, torch.float32)
    out_tri, g_tri = _run(tri, x, state, is_first, torch.bfloat16)
    assert out_tri[0].dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in g_tri)
    _assert_close(out_tri, out_ref, 3e-2, "output/state")
    for a, b in zip(g_tri, g_ref):  # relative to the gradient's scale
        assert (a.float() - b).abs().max() <= 3e-2 * b.abs().max() + 1e-3


def test_triton_backend_refuses_what_it_cannot_run(monkeypatch):
    x = torch.randn(3, 2, 4, device=DEVICE)
    core = make_core("om-lstm", 4, 8, backend="triton").to(DEVICE)
    with pytest.raises(RuntimeError, match="no Triton kernel for om-lstm"):
        core(x, core.initial_state(2))
    with pytest.raises(RuntimeError, match="Triton kernels take"):
        core = make_core("ur-lstm", 4, 8, backend="triton").double().to(DEVICE)
        core(x.double(), core.initial_state(2))
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        core = make_core("ur-lstm", 4, 8, backend="triton")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            core(x, core.initial_state(2))


@pytest.mark.skipif(DEVICE != "cpu", reason="auto picks the Triton kernels on CUDA")
def test_interpreted_triton_is_never_the_cpu_fused_path():
    """TRITON_INTERPRET=1 runs the kernels on CPU for tests; "fused" still means the CPU paths."""
    core = make_core("ur-lstm", 4, 8, backend="fused")
    assert core.resolve_backend(torch.randn(2, 2, 4)) in ("native", "pytorch")
    assert core.resolve_backend(torch.randn(2, 2, 4, dtype=torch.float64)) == "pytorch"


_COMPILE = """
import json, sys, torch
from rlgate.cores.triton_fused import compile_for
out = []
for cap, mode, hidden, dtype in json.loads(sys.argv[1]):
    tf32 = dtype == "tf32"
    dt = torch.float32 if tf32 else getattr(torch, dtype)
    shared = compile_for(cap, mode, hidden, dt, tf32=tf32)
    out.append([cap, mode, hidden, dtype, max(shared.values())])
print(json.dumps(out))
"""


def _compile(cases):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# A100's 163 KiB of shared memory per block is the smaller limit of the two targets
_SHARED_LIMIT = 163 * 1024


def test_kernels_compile_for_h100_and_fit_shared_memory():
    """Without a GPU: compile for sm_90 (H100) the shapes of the issue's target, ur-lstm and
    ur-gru at H=256 in fp32 (IEEE and TF32 dots) and bf16, and check they fit on chip."""
    cases = [[90, mode, 256, dt] for mode in (2, 4) for dt in ("float32", "bfloat16", "tf32")]
    for cap, mode, hidden, dtype, shared in _compile(cases):
        assert 0 < shared <= _SHARED_LIMIT, (cap, mode, hidden, dtype, shared)


@pytest.mark.slow
def test_every_mode_compiles_for_a100_and_h100_at_every_benchmark_size():
    cases = [
        [cap, mode, hidden, dt]
        for cap in (80, 90)
        for mode in range(5)
        for hidden in (16, 128, 256, 512)
        for dt in ("float32", "bfloat16", "tf32")
    ]
    for cap, mode, hidden, dtype, shared in _compile(cases):
        assert 0 < shared <= _SHARED_LIMIT, (cap, mode, hidden, dtype, shared)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", SIGMOID_PRESETS)
def test_triton_on_cuda_at_rl_sizes(name, dtype):
    ref, tri = _pair(name, 64, 256, dtype)
    x, is_first, state = _inputs(32, 300, 64, 256, len(ref.initial_state(1)))
    assert make_core(name, 64, 256, backend="fused").cuda().resolve_backend(x) == "triton"
    out_ref, g_ref = _run(ref, x, state, is_first, torch.float32)
    out_tri, g_tri = _run(tri, x, state, is_first, dtype)
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    _assert_close(out_tri, out_ref, tol, "output/state")
    for a, b in zip(g_tri, g_ref):
        assert (a.float() - b).abs().max() <= tol * b.abs().max() + 1e-3
