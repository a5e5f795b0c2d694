"""The actor-critic's acting step in one native call.

Acting runs the model on one step of N envs, a few hundred rows of arithmetic at the sizes the
recipes use, and module by module that is some fifty small PyTorch ops (encoder, core step,
gate, heads), each a few microseconds of dispatch: at 64 envs they cost several times their
arithmetic. ``FusedStep`` runs the same step, no gradient, as one call into native.c's
``policy_step``: the encoder's affine map of its dense inputs (built here, as the encoder
builds them: the previous action's features, f(previous reward), the leaves other than the
view) plus the view's map (a minigrid view from its codes, a rlgate grid view from its 0/1
cells) and the channel counts' map, the ReLU, the core's step with its reset, the view gate
and both heads. Sampling stays with the action distribution.

It covers the models ``ActorCritic`` builds on the CPU in float32 whose core runs the native
kernels (every core but the cumax-forget o- and or-lstm and the memoryless control) and whose
view, if any, is a minigrid or uint8 grid view. ``ActorCritic.step`` uses it wherever it
applies and the module-by-module step (the reference it is tested against) elsewhere, and
while forward hooks are registered on the model (they read what the modules compute), and
logs once which and why. Its outputs equal the reference's up to the order of float sums.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from rlgate.agents.encoders import _key
from rlgate.cores import native
from rlgate.cores.backends import resolve
from rlgate.cores.gru import GRUCore
from rlgate.cores.lstm import LSTMCore

log = logging.getLogger(__name__)

_VIEW = {None: 0, "minigrid": 1, "grid": 2}
_P = ctypes.c_void_p


class Args(ctypes.Structure):
    """native.c's ``policy_step_args`` (field for field, in its order)."""

    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "n", "extra", "enc", "view", "k", "vocab", "channels", "core", "mode", "chunk",
            "hidden", "head", "params", "gate", "work_size",
        )
    ] + [
        (name, _P)
        for name in (
            "w_extra", "b_extra", "table", "w_pool", "w_ih", "b_ih", "w_hh", "b_hh", "w_gate",
            "b_gate", "w1", "b1", "w2", "b2", "base", "e", "obs_view", "first",
            "h0", "c0", "h1", "c1", "out_params", "out_value", "work",
        )
    ]  # fmt: skip


def _library():
    lib = native.library()
    if not getattr(lib, "_policy_step_typed", False):
        lib.policy_step.argtypes, lib.policy_step.restype = (ctypes.POINTER(Args),), ctypes.c_int
        lib.policy_step_work.argtypes = (ctypes.POINTER(Args),)
        lib.policy_step_work.restype = ctypes.c_int64
        lib._policy_step_typed = True
    return lib


def forward_hooked(modules: Iterable[nn.Module]) -> bool:
    """Whether a forward hook is registered on any of ``modules`` (or globally): hooks read
    what the modules compute, so the modules must run."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return True
    return any(x._forward_hooks or x._forward_pre_hooks for x in modules)


def stacked_heads(policy: nn.Module, value: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two Linear-Tanh-Linear heads as one: the first layers stacked (w1 [2N, in], b1 [2N]),
    the last ones block-diagonal (w2 [P + 1, 2N], b2 [P + 1]: the policy's outputs read its
    units, the value its own; the zero blocks add exact zeros). Differentiable."""
    (p1, p2), (v1, v2) = _mlp(policy), _mlp(value)
    return (
        torch.cat([p1.weight, v1.weight]),
        torch.cat([p1.bias, v1.bias]),
        torch.block_diag(p2.weight, v2.weight),
        torch.cat([p2.bias, v2.bias]),
    )


def _mlp(head: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """(first, last) of a head ``ActorCritic`` builds as Linear, Tanh, Linear; None if not."""
    if (
        isinstance(head, nn.Sequential)
        and len(head) == 3
        and isinstance(head[0], nn.Linear)
        and isinstance(head[1], nn.Tanh)
        and isinstance(head[2], nn.Linear)
    ):
        return head[0], head[2]
    return None


def why_not(model, obs: dict[str, Tensor], state) -> str:
    """Why ``FusedStep`` can't run ``model``'s acting step on ``obs`` (dict of [N, ...]) from
    core state ``state``, or "" where it can."""
    core, enc = model.core, model.encoder
    if not isinstance(core, (LSTMCore, GRUCore)) or core.native_mode() is None:
        return f"no native step for the {core.preset.name} core"
    h = state[0]
    if h.device.type != "cpu" or h.dtype != torch.float32:
        return f"the native step runs float32 on the CPU, got {h.dtype} on {h.device.type}"
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return "the native step needs every parameter float32 on the CPU"
    if resolve(core, h) != "native":
        return f"the core runs backend={core.backend!r}, not the native kernels"
    kind = enc.kinds.get(enc.view_key)
    if kind not in _VIEW:
        return f"no native step for a {kind} view"
    if kind is not None and obs[enc.view_key].dtype != torch.uint8:
        return f"the native step reads a {kind} view as uint8, got {obs[enc.view_key].dtype}"
    linear = isinstance(model.policy, nn.Linear) and isinstance(model.value, nn.Linear)
    if not linear and (_mlp(model.policy) is None or _mlp(model.value) is None):
        return "the heads are neither linear nor Linear-Tanh-Linear"
    ok, why = native.available()
    return "" if ok else why


#: model -> {(device, dtype): its FusedStep, or None where it does not apply}
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def for_model(model, obs: dict[str, Tensor], state) -> FusedStep | None:
    """The FusedStep of ``model`` for this state's device and dtype (the parameters' for a
    core without state), or None where it does not apply; decided, and logged, once per
    model, device and dtype."""
    steps = _STEPS.setdefault(model, {})
    like = state[0] if len(state) else next(model.parameters())
    key = (like.device, like.dtype)
    if key not in steps:
        why = why_not(model, obs, state)
        steps[key] = None if why else FusedStep(model)
        log.info(
            "acting step on %s: %s", key[0],
            f"module by module ({why})" if why else "one native call (policy_step)",
        )  # fmt: skip
    step = steps[key]
    if step is not None and step.hooked(model):
        return None
    return step


class FusedStep:
    """``ActorCritic.step`` of ``model`` without gradients, in one native call (the module
    docstring says what it covers; ``why_not`` checks it). The packed weights are rebuilt
    whenever a parameter changes (its version counter or storage)."""

    def __init__(self, model):
        core, enc = model.core, model.encoder
        self.gru = isinstance(core, GRUCore)
        self.kind = enc.kinds.get(enc.view_key)
        # the model holds these: no reference cycle through here (the model itself is not kept)
        self.params = list(model.parameters())
        self.modules = list(model.modules())[1:]
        self.hooks_said = False
        self.key: tuple | None = None
        self.work: dict[int, Tensor] = {}
        a = self.args = Args()
        a.extra, a.enc = enc.extra.in_features, enc.out_size
        a.view = _VIEW[self.kind]
        a.vocab = enc.image_size
        a.channels = enc.channels
        if self.kind == "minigrid":
            leaf = enc.leaves[_key(enc.view_key)]
            self.base = leaf.base.contiguous()
            a.k = self.base.numel()
            a.base = self.base.data_ptr()
        elif self.kind == "grid":
            a.k = enc.image_size
        a.core = int(self.gru)
        a.mode = int(core.preset.refine) if self.gru else core.native_mode()
        a.chunk = getattr(core, "chunk_size", 1) or 1
        a.hidden = core.hidden_size
        a.head = model.head_size
        a.params = model.action_dist.param_size
        a.gate = int(model.view_gate)

    def hooked(self, m) -> bool:
        """Whether a forward hook is registered on the model or any of its modules (or
        globally): hooks read what the modules compute, so the modules must run. Logged the
        first time."""
        hooked = forward_hooked((m, *self.modules))
        if hooked and not self.hooks_said:
            self.hooks_said = True
            log.info("acting step: module by module while forward hooks are registered")
        return hooked

    def _pack(self, m) -> None:
        """The weights of model m as native.c reads them ([in, out], heads side by side),
        where a parameter changed since they were last packed."""
        key = tuple((p._version, p.data_ptr()) for p in self.params)
        if key == self.key:
            return
        a = self.args
        enc, core = m.encoder, m.core
        t = lambda w: w.detach().t().contiguous()  # noqa: E731
        w_ih, w_hh, b_ih, b_hh = core._weights()
        packed = {
            "w_extra": t(enc.extra.weight), "b_extra": enc.extra.bias.detach().contiguous(),
            "w_ih": t(w_ih), "b_ih": b_ih.detach().contiguous(), "w_hh": t(w_hh),
        }  # fmt: skip
        if b_hh is not None:
            packed["b_hh"] = b_hh.detach().contiguous()
        if enc.image is not None:
            packed["table"] = t(enc.image.weight)
        if enc.pool is not None:
            packed["w_pool"] = t(enc.pool.weight)
        if m.view_gate:
            packed["w_gate"], packed["b_gate"] = t(m.gate.weight), m.gate.bias.detach()
        if m.head_size:
            w1, b1, w2, b2 = (w.detach() for w in stacked_heads(m.policy, m.value))
            packed["w1"], packed["b1"], packed["w2"], packed["b2"] = t(w1), b1, w2, b2
        else:
            packed["w2"] = torch.cat([m.policy.weight, m.value.weight]).detach()  # [P + 1, H]
            packed["b2"] = torch.cat([m.policy.bias, m.value.bias]).detach()
        for name in ("w_extra", "b_extra", "table", "w_pool", "w_ih", "b_ih", "w_hh", "b_hh",
                     "w_gate", "b_gate", "w1", "b1", "w2", "b2"):  # fmt: skip
            w = packed.get(name)
            if w is not None:
                w = packed[name] = w.contiguous()
            setattr(a, name, None if w is None else w.data_ptr())
        self.packed, self.key = packed, key

    def __call__(self, m, obs, prev_action, prev_reward, is_first, state):
        """``ActorCritic.step`` of model m (the one this was built for): (policy outputs
        [N, P], value [N], new state)."""
        a = self.args
        enc = m.encoder
        n = is_first.shape[0]
        for s in state:
            _check(s, (n, a.hidden), torch.float32, "the core state")
        first = is_first.contiguous().view(torch.uint8)
        _check(first, (n,), torch.uint8, "is_first")
        e = enc.extra_input(
            {k: v[None] for k, v in obs.items()},
            m.action_dist.features(prev_action[None]),
            prev_reward[None],
        )[0]
        _check(e, (n, a.extra), torch.float32, "the encoder's dense inputs")
        h0 = state[0]
        a.n = n
        if self.kind is not None:
            view = obs[enc.view_key].contiguous()
            if view.dtype != torch.uint8 or view.numel() != n * a.k or view.device.type != "cpu":
                raise ValueError(
                    f"the native step takes the {self.kind} view as uint8 [N, {a.k}] values "
                    f"on the CPU, got {view.dtype} {tuple(view.shape)}"
                )
            a.obs_view = view.data_ptr()
        self._pack(m)
        lib = _library()
        work = self.work.get(n)
        if work is None:
            a.work_size = 0
            work = self.work[n] = h0.new_empty(lib.policy_step_work(ctypes.byref(a)))
        a.work, a.work_size = work.data_ptr(), work.numel()
        h1 = torch.empty_like(h0)
        c1 = None if self.gru else torch.empty_like(h0)
        params = h0.new_empty(n, a.params)
        value = h0.new_empty(n)
        a.e, a.first, a.h0, a.h1 = e.data_ptr(), first.data_ptr(), h0.data_ptr(), h1.data_ptr()
        a.c0 = None if self.gru else state[1].data_ptr()
        a.c1 = None if self.gru else c1.data_ptr()
        a.out_params, a.out_value = params.data_ptr(), value.data_ptr()
        code = lib.policy_step(ctypes.byref(a))
        if code == -2:
            raise ValueError(f"minigrid codes must index the view's {a.vocab} one-hot features")
        if code != 0:
            raise ValueError(f"native policy step: inconsistent sizes ({code})")
        new = (h1,) if self.gru else (h1, c1)
        return params, value, m.core.State(*new)


def _check(t: Tensor, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> None:
    """ValueError unless t is a contiguous CPU tensor of this shape and dtype (what native.c
    reads through its pointer)."""
    if t.shape != shape or t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(
            f"native policy step: {what} must be a contiguous CPU {dtype} tensor of shape "
            f"{shape}, got {t.dtype} {tuple(t.shape)} on {t.device}"
        )
