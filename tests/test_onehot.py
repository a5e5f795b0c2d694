"""The native one-hot map against the dense one (a one-hot built by scatter, times the weight)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlgate.agents import onehot
from rlgate.agents.encoders import MINIGRID_CODES, ObsEncoder
from rlgate.cores import native

pytestmark = pytest.mark.skipif(not native.available()[0], reason="no C compiler")


OFFSETS = torch.tensor([0, MINIGRID_CODES[0], MINIGRID_CODES[0] + MINIGRID_CODES[1]])
BASE = (torch.arange(49)[:, None] * 20 + OFFSETS).reshape(-1)  # a 7 x 7 minigrid view's


def _minigrid_codes(t, b, seed=0):
    """Random minigrid views' codes, [t, b, 49 * 3] uint8 (cell-major, as BASE)."""
    g = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, n, (t, b, 49), generator=g) for n in MINIGRID_CODES]
    return torch.stack(codes, -1).reshape(t, b, -1).to(torch.uint8)


def _dense(codes, base, weight):
    one_hot = torch.zeros(*codes.shape[:-1], weight.shape[1])
    one_hot.scatter_(-1, base + codes.long(), 1.0)
    return one_hot @ weight.t()


@pytest.mark.parametrize("dim", [64, 45, 7])  # whole register tiles, a tail, only a tail
def test_matches_the_dense_map_forward_and_backward(dim):
    codes = _minigrid_codes(5, 6)
    weight = torch.randn(dim, 980, requires_grad=True)
    grad = torch.randn(5, 6, dim)
    y = onehot.one_hot_linear(codes, BASE, weight)
    (y * grad).sum().backward()
    native_grad, weight.grad = weight.grad, None
    y_ref = _dense(codes, BASE, weight)
    (y_ref * grad).sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native_grad, weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(onehot.one_hot_linear_reference(codes, BASE, weight), y_ref)
    # any integer dtype in 0..255 gives the same
    torch.testing.assert_close(onehot.one_hot_linear(codes.long(), BASE, weight), y)


def test_without_a_gradient_to_take_the_kernel_runs_alone_to_the_same_bits():
    codes = _minigrid_codes(3, 64)
    weight = torch.randn(64, 980, requires_grad=True)
    y = onehot.one_hot_linear(codes, BASE, weight)
    assert y.grad_fn is not None
    with torch.no_grad():
        acting = onehot.one_hot_linear(codes, BASE, weight)
    frozen = onehot.one_hot_linear(codes, BASE, weight.detach())
    for out in (acting, frozen):
        assert out.grad_fn is None and not out.requires_grad
        assert torch.equal(out, y)


def test_repeated_indices_count_and_threads_do_not_change_the_gradient():
    codes, base = torch.tensor([[3, 3, 0], [1, 2, 3]]), torch.tensor([0, 0, 1])
    weight = torch.randn(4, 5, requires_grad=True)
    torch.testing.assert_close(
        onehot.one_hot_linear(codes, base, weight),
        onehot.one_hot_linear_reference(codes, base, weight),
    )
    big = _minigrid_codes(64, 16, seed=1)
    w = torch.randn(64, 980, requires_grad=True)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            w.grad = None
            onehot.one_hot_linear(big, BASE, w).pow(2).sum().backward()
            grads.append(w.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1])


def test_bad_input_is_refused_before_the_kernel_runs():
    weight, base = torch.randn(8, 10), torch.tensor([0, 5])
    codes = torch.tensor([[0, 5]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):  # 5 + 5 is feature 10
        onehot.one_hot_linear(codes, base, weight)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        onehot.one_hot_linear(codes.fill_(1), torch.tensor([-2, 0]), weight)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        onehot.one_hot_linear(torch.tensor([[0, 300]]), base, weight)
    with pytest.raises(ValueError, match="integer"):
        onehot.one_hot_linear(torch.tensor([[0.0, 1.0]]), base, weight)
    with pytest.raises(ValueError, match="shape"):
        onehot.one_hot_linear(codes, torch.tensor([0, 1, 2]), weight)
    with pytest.raises(ValueError, match="float32"):
        onehot.one_hot_linear(codes, base, weight.double())


def test_a_stale_transposed_weight_is_never_used():
    w = torch.randn(3, 4)
    first = native.transposed(w)
    assert native.transposed(w) is first
    w.add_(1.0)  # an in-place update, as an optimizer step
    torch.testing.assert_close(native.transposed(w), w.t())


def test_a_gradient_step_moves_the_version_counters(tmp_path):
    """The cache of transposed weights trusts version counters: a learner's gradient step must
    move them, whatever its optimizer's kernel does (fused Adam's leaves them as they were, and
    training then used stale weights)."""
    from rlgate.config import TrainConfig
    from rlgate.train import Trainer

    cfg = TrainConfig.from_recipe("memory-s7", seed=0, logdir=str(tmp_path), progress=False)
    trainer = Trainer(cfg)
    w = trainer.model.encoder.image.weight
    stale = native.transposed(w).clone()
    params = list(trainer.model.parameters())
    before = [p._version for p in params]
    loss = sum(p.square().sum() for p in params)
    trainer.learner.gradient_step(loss)
    assert all(p._version != v for p, v in zip(params, before))
    assert not torch.equal(native.transposed(w), stale)
    torch.testing.assert_close(native.transposed(w), w.detach().t())


def test_encoder_native_view_matches_the_one_hot_view():
    space = gym.spaces.Dict(
        {"image": gym.spaces.Box(0, 10, (7, 7, 3), np.uint8), "direction": gym.spaces.Discrete(4)}
    )
    kinds = {"image": "minigrid"}
    torch.manual_seed(0)
    dense = ObsEncoder(space, 7, 32, kinds)
    torch.manual_seed(0)
    fast = ObsEncoder(space, 7, 32, kinds, native_view=True)
    assert fast.native_view and not dense.native_view
    codes = [torch.randint(0, n, (4, 3, 7, 7)) for n in MINIGRID_CODES]
    image = torch.stack(codes, -1).to(torch.uint8)
    obs = {"image": image, "direction": torch.randint(0, 4, (4, 3))}
    feats, reward = torch.randn(4, 3, 7), torch.randn(4, 3)
    torch.testing.assert_close(
        fast.embed(None, obs, feats, reward), dense.embed(None, obs, feats, reward)
    )


def _grid(rows, cells, channels, seed=0, empty=0.2, twos=0.05):
    """Random grid views [rows, cells * channels] uint8: one channel per cell, some cells
    empty, a few entries 2 (the map multiplies by the value)."""
    g = torch.Generator().manual_seed(seed)
    hot = torch.randint(0, channels, (rows, cells), generator=g)
    grid = torch.zeros(rows, cells, channels, dtype=torch.uint8)
    grid.scatter_(-1, hot.unsqueeze(-1), 1)
    grid[torch.rand(rows, cells, generator=g) < empty] = 0
    grid[torch.rand(rows, cells, channels, generator=g) < twos] = 2
    return grid.reshape(rows, -1)


def _plain_gated(obs, base, weight, gate):
    """The gated view's map, a loop over rows and features, written from the definition."""
    rows, (dim, vocab) = obs.shape[0], weight.shape
    out = torch.zeros(rows, dim, dtype=torch.float64)
    for r in range(rows):
        x = torch.zeros(vocab, dtype=torch.float64)
        if base is None:
            x += obs[r].double()
        else:
            for j, c in enumerate(obs[r].tolist()):
                x[int(base[j]) + c] += 1.0
        for v in range(vocab):
            g = 1.0 if gate is None else float(gate[r, v % gate.shape[1]].detach())
            out[r] += x[v] * g * weight[:, v].double()
    return out.float()


@pytest.mark.parametrize("dim", [128, 45, 7])  # whole register tiles, a tail, only a tail
@pytest.mark.parametrize("kind", ["grid", "codes", "grid-no-gate"])
def test_view_linear_matches_the_plain_map_forward_and_backward(kind, dim):
    if kind == "codes":
        obs, base, channels = _minigrid_codes(2, 5).reshape(10, -1), BASE, 20
    else:
        obs, base, channels = _grid(10, 25, 6), None, 6
    vocab = 980 if kind == "codes" else 150
    weight = torch.randn(dim, vocab, requires_grad=True)
    gate = None if kind == "grid-no-gate" else torch.rand(10, channels, requires_grad=True)
    leaves = [weight] if gate is None else [weight, gate]
    grad = torch.randn(10, dim)
    y = onehot.view_linear(obs, base, weight, gate)
    got = torch.autograd.grad(y, leaves, grad)
    plain = _plain_gated(obs, base, weight.detach(), gate)
    torch.testing.assert_close(y, plain, rtol=1e-5, atol=1e-4)
    y_ref = onehot.view_linear_reference(obs, base, weight, gate)
    want = torch.autograd.grad(y_ref, leaves, grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_view_linear_over_many_hot_features_and_threads():
    """More hot features in a row than the kernel lists at a time (256), and 1 or 2 threads:
    the same sums."""
    obs = torch.ones(64, 600, dtype=torch.uint8)
    obs[::3, ::7] = 0
    weight = torch.randn(40, 600, requires_grad=True)
    gate = torch.rand(64, 4, requires_grad=True)
    grad = torch.randn(64, 40)
    y_ref = onehot.view_linear_reference(obs, None, weight, gate)
    want = torch.autograd.grad(y_ref, [weight, gate], grad)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = onehot.view_linear(obs, None, weight, gate)
            results.append((y, *torch.autograd.grad(y, [weight, gate], grad)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[0], results[1]):
        assert torch.equal(a, b)
    for a, b in zip(results[0], (y_ref, *want)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_view_linear_refuses_bad_input_before_the_kernel_runs():
    grid, weight, gate = _grid(3, 25, 6), torch.randn(8, 150), torch.rand(3, 6)
    with pytest.raises(ValueError, match="150 features"):
        onehot.view_linear(grid[:, :100], None, weight, gate)
    with pytest.raises(ValueError, match="divide"):
        onehot.view_linear(grid, None, weight, torch.rand(3, 7))
    with pytest.raises(ValueError, match="gate of shape"):
        onehot.view_linear(grid, None, weight, torch.rand(2, 6))
    with pytest.raises(ValueError, match="integer"):
        onehot.view_linear(grid.float(), None, weight, gate)
    with pytest.raises(ValueError, match="float32"):
        onehot.view_linear(grid, None, weight.double(), gate)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        onehot.view_linear(grid.long() * 200, None, weight, gate)
    codes = torch.tensor([[0, 5]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):  # 5 + 5 is feature 10
        onehot.view_linear(codes, torch.tensor([0, 5]), torch.randn(8, 10), torch.rand(1, 2))


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dim", [128, 45, 7])  # whole register tiles, a tail, only a tail
@pytest.mark.parametrize("kind", ["grid", "codes"])
def test_view_linear_act_matches_the_plain_map_and_threads_agree(kind, dim, act):
    """act(pre + the gated view's map), written over pre: forward and the gradients of pre,
    the weight and the gate against torch's act over the plain loop's map (float64), and the
    same bits at 1 and 2 threads."""
    rows = 300  # enough rows x features x dim for the kernels' parallel regions
    if kind == "codes":
        obs, base, channels, vocab = _minigrid_codes(30, 10).reshape(rows, -1), BASE, 20, 980
    else:
        obs, base, channels, vocab = _grid(rows, 25, 6), None, 6, 150
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(dim, vocab, generator=g, requires_grad=True)
    gate = torch.rand(rows, channels, generator=g, requires_grad=True)
    pre0 = torch.randn(rows, dim, generator=g)
    grad = torch.randn(rows, dim, generator=g)
    # the reference in float64: act(pre + the plain map), its gradients by autograd
    w64, g64 = weight.detach().double().requires_grad_(), gate.detach().double().requires_grad_()
    p64 = pre0.double().requires_grad_()
    fn = torch.tanh if act == "tanh" else torch.relu
    y64 = fn(p64 + onehot.view_linear_reference(obs, base, w64, g64))
    torch.testing.assert_close(
        y64.float(), fn(pre0 + _plain_gated(obs, base, weight.detach(), gate)),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    want = torch.autograd.grad(y64, [p64, w64, g64], grad.double())
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            pre = pre0.clone().requires_grad_()
            y = onehot.view_linear_act(pre * 1.0, obs, base, weight, gate, act)
            results.append((y, *torch.autograd.grad(y, [pre, weight, gate], grad)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[0], results[1]):
        assert torch.equal(a, b)
    for a, b in zip(results[0], (y64, *want)):  # float32 sums of up to 147 terms a row
        torch.testing.assert_close(
            a, b.float(), rtol=1e-4, atol=1e-5 * float(b.detach().abs().max())
        )


def test_view_linear_act_refuses_a_pre_or_act_it_cannot_take():
    grid, weight, gate = _grid(3, 25, 6), torch.randn(8, 150), torch.rand(3, 6)
    for pre in (torch.zeros(3, 7), torch.zeros(3, 8).double(), torch.zeros(8, 3).t()):
        with pytest.raises(ValueError, match="pre must be"):
            onehot.view_linear_act(pre, grid, None, weight, gate)
    with pytest.raises(ValueError, match="divide"):
        onehot.view_linear_act(torch.zeros(3, 8), grid, None, weight, torch.rand(3, 7))
    with pytest.raises(ValueError, match="act must be"):
        onehot.view_linear_act(torch.zeros(3, 8), grid, None, weight, gate, act="sigmoid")


def test_view_gate_heads_from_hot_indices_match_the_dense_heads():
    """A PassiveMatch model (uint8 grid view, view gate, view pool): its outputs and every
    gradient equal those of the same model built with the dense path."""
    from rlgate.agents.actor_critic import ActorCritic
    from rlgate.envs import make_vec

    env = make_vec("rlgate/PassiveMatch-v0", 4, seed=0)
    kinds = getattr(env, "observation_kinds", None)

    def model(backend):
        torch.manual_seed(3)
        return ActorCritic(
            env.single_observation_space, env.single_action_space, "ur-lstm", 16, 16,
            {"backend": backend}, head_size=8, view_gate=True, policy_init_gain=1.0,
            observation_kinds=kinds, view_pool=True,
        )  # fmt: skip

    fast, dense = model("auto"), model("pytorch")
    assert fast._hot_heads() and not dense._hot_heads()
    obs, _ = env.reset(seed=0)
    t = 6
    obs_t = {k: torch.stack([v] * t) for k, v in obs.items()}
    prev_a = torch.randint(0, env.single_action_space.n, (t, 4))
    prev_r, first = torch.randn(t, 4), torch.zeros(t, 4, dtype=torch.bool)
    first[0] = True
    outs = []
    for m in (fast, dense):
        p, v, _ = m(obs_t, prev_a, prev_r, first, m.initial_state(4))
        (p.square().sum() + v.sum()).backward()
        outs.append((p, v, {n: q.grad for n, q in m.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)
    assert outs[0][2].keys() == outs[1][2].keys()
    for name, g in outs[0][2].items():
        torch.testing.assert_close(g, outs[1][2][name], rtol=1e-4, atol=1e-5, msg=name)


def test_view_kernels_without_avx512_search_the_same_features():
    """The hot-feature search has an AVX-512 path and a portable one (a byte mask 8 entries at
    a time); native.c built without AVX-512 gives the same outputs and table gradient bit for
    bit (a grid with empty cells and values 2, rows longer than the search's chunk)."""
    import ctypes
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the AVX-512 path is x86's")
    try:
        plain = native.build(
            native.SOURCE, "native-no-avx512", (*native.CORE_FLAGS, "-mno-avx512f")
        )
    except native.NativeUnavailable as e:
        pytest.skip(str(e))
    libs = [native.library(), plain]
    for lib in libs:
        for name in ("view_forward", "view_backward"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = native.CHECKED[name], ctypes.c_int
    grid = torch.cat([_grid(40, 100, 6, seed=2), torch.ones(40, 600, dtype=torch.uint8)])
    weight = torch.randn(600, 37)  # the table [vocab, dim]: a tail of 5 columns
    gate = torch.rand(80, 6)
    grad_out = torch.randn(80, 37)
    results = []
    for lib in libs:
        out, grad, grad_gate = torch.empty(80, 37), torch.zeros(600, 37), torch.empty(80, 6)
        args = onehot._view_args(grid, None, gate, 37, 600)
        assert lib.view_forward(*args, weight.data_ptr(), out.data_ptr()) == 0
        code = lib.view_backward(
            *args, weight.data_ptr(), grad_out.data_ptr(), grad.data_ptr(), grad_gate.data_ptr()
        )
        assert code == 0
        results.append((out, grad, grad_gate))
    (out_a, grad_a, gate_a), (out_b, grad_b, gate_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)  # the same features
    # the gates' dot products: the compiler may fuse their multiply-adds differently when the
    # 16-float vectors are two 8-float halves
    torch.testing.assert_close(gate_a, gate_b, rtol=1e-5, atol=1e-6 * float(gate_a.abs().max()))
