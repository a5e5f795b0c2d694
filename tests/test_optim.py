"""rlgate.optim.Adam against torch.optim.Adam(fused=True): the same parameters bit for bit,
state_dicts that load into each other, refusals of another model's state."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import nn

from rlgate.optim import Adam


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Linear(3, 2))


def _grads(model: nn.Module, step: int, skip: int | None = None) -> None:
    """Gradients from a fixed draw per step; the parameter ``skip`` gets none."""
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(model.parameters()):
        p.grad = None if i == skip else torch.randn(p.shape, generator=g)


def _run(model, opt, steps: range, lrs=None) -> None:
    for k in steps:
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[k]
        # parameter 1 gets no gradient in the first two steps: its state starts later
        _grads(model, k, skip=1 if k < 2 else None)
        opt.step()
        opt.zero_grad(set_to_none=True)


def _same(a: nn.Module, b: nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_same_parameters_as_torch_fused_adam():
    ours, ref = _model(), _model()
    lrs = [3e-3, 2e-3, 1e-3, 5e-4, 0.0, 1e-3]
    _run(ours, Adam(ours.parameters(), lr=3e-3, eps=1e-5), range(6), lrs)
    torch_opt = torch.optim.Adam(ref.parameters(), lr=3e-3, eps=1e-5, fused=True)
    _run(ref, torch_opt, range(6), lrs)
    _same(ours, ref)
    # and against plain Adam to rounding: the fused kernel is Adam
    plain = _model()
    _run(plain, torch.optim.Adam(plain.parameters(), lr=3e-3, eps=1e-5), range(6), lrs)
    for pa, pb in zip(ours.parameters(), plain.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_parameter_without_gradient_is_left_alone():
    model = _model()
    opt = Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    _grads(model, 0, skip=1)
    opt.step()
    after = list(model.parameters())
    assert torch.equal(after[1], before[1]) and not torch.equal(after[0], before[0])
    assert after[1] not in opt.state and after[0] in opt.state


@pytest.mark.parametrize("first", ["ours", "torch", "torch-plain"])
def test_state_dict_moves_between_the_two(first):
    """Three steps with one optimizer, its state_dict loaded into the other kind (through
    torch.save, as a checkpoint), three more: the parameters of a run that never switched."""
    ref = _model()
    _run(ref, torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-5, fused=True), range(6))
    model = _model()
    make = {
        "ours": lambda: Adam(model.parameters(), lr=1e-3, eps=1e-5),
        "torch": lambda: torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5, fused=True),
        "torch-plain": lambda: torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5),
    }
    opt = make[first]()
    _run(model, opt, range(3))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    second = make["torch"]() if first == "ours" else make["ours"]()
    second.load_state_dict(torch.load(buf, weights_only=True))
    _run(model, second, range(3, 6))
    if first == "torch-plain":  # its first three steps were rounded another way
        for pa, pb in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    else:
        _same(model, ref)
    if first != "ours":
        assert second.param_groups[0]["lr"] == 1e-3 and second.param_groups[0]["eps"] == 1e-5


def test_refuses_another_models_state():
    model = _model()
    opt = Adam(model.parameters(), lr=1e-3)
    _run(model, opt, range(2))
    kept = {k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}

    other = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3))
    other_opt = Adam(other.parameters())
    _grads(other, 0)
    other_opt.step()
    with pytest.raises(ValueError, match="groups of \\[4\\] parameters"):
        opt.load_state_dict(other_opt.state_dict())

    wide = _model()
    wide[0] = nn.Linear(5, 8)
    wide[2] = nn.Linear(8, 3)
    wide_opt = Adam(wide.parameters())
    _grads(wide, 0)
    wide_opt.step()
    with pytest.raises(ValueError, match="exp_avg of parameter 0 has shape \\(8, 5\\)"):
        opt.load_state_dict(wide_opt.state_dict())

    amsgrad = torch.optim.Adam(_model().parameters(), amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad=True"):
        opt.load_state_dict(amsgrad.state_dict())
    # nothing changed
    now = opt.state_dict()["state"]
    assert kept.keys() == now.keys()
    for k in kept:
        for n in kept[k]:
            assert torch.equal(kept[k][n], now[k][n])


def test_refuses_bad_parameters():
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="twice"):
        Adam([w, w])
    with pytest.raises(ValueError, match="no parameters"):
        Adam([])
    with pytest.raises(ValueError, match="floating-point"):
        Adam([torch.zeros(3, dtype=torch.long)])


def test_training_does_not_import_dynamo(tmp_path):
    """The point of this Adam: a training process never imports torch._dynamo."""
    code = (
        "import sys\n"
        "from rlgate.config import TrainConfig\n"
        "from rlgate.train import Trainer\n"
        "cfg = TrainConfig(num_envs=4, unroll_length=8, total_timesteps=64,"
        f" hidden_size=8, encoder_size=8, logdir={str(tmp_path)!r}, progress=False)\n"
        "result = Trainer(cfg).run()\n"
        "assert result.updates == 2, result.updates\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
