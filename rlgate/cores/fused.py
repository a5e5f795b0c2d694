"""Fused sequence kernels in plain PyTorch: the cell math of the fused loop, forward and
hand-derived backward, for the LSTM and GRU families (the loop itself: ``recurrence``).

The loop projects the input of all T steps in one matmul (xw = x @ W_ih^T + b_ih), then per
step does one ``addmm`` for the recurrent term and the cell's gate math, written with ``out=``
into workspace buffers allocated once per call ([T, B, ...], time-major). Its backward runs the
steps in reverse with the cell's derivatives and forms the weight gradients with a few large
matmuls: dW_ih = dZx^T x, dW_hh = dZh^T h_prev, dx = dZx W_ih.

The cell math lives in a *kernel* object, one per call: ``LSTMKernel`` and ``GRUKernel`` here,
in PyTorch ops, or ``fused_native.NativeLSTMKernel`` and ``NativeGRUKernel``, whose per-step
gate math is one call into native.c (CPU, float32). A kernel provides:

- ``allocate(t_len, batch, rest0, like, g)``: workspace; ``rest0`` is the state beyond h.
- ``reset(t, keep_t)``: zero the non-h state of the columns that start an episode at step t.
- ``project(x2, w_ih, b_ih)``: the input projection of all steps, one matmul.
- ``forward_step(t, xw_t, h, w_hh_t, b_hh, y_t)``: one step; writes h_t into ``y_t``.
- ``coefficients(t0, t1, h_prev)``: whatever a chunk of backward steps needs precomputed.
- ``backward_step(t, j, co, dh, dy_t, dzx_t, dzh_t)``: adds the output gradient dy_t to dh,
  writes dL/d(pre-activation) into ``dzx_t`` (input side) and ``dzh_t`` (recurrent side; the
  same tensor for the LSTM family), keeps the gradient of the non-h state, and returns
  dL/dh_{t-1} not passing through W_hh (or None).
- ``recurrent_grad(dzh_t, w_hh, dh_direct)``: dL/dh_{t-1} = dh_direct + dzh_t W_hh.

Every kernel is tested against the readable reference cells (rlgate/cores/lstm.py, gru.py) on
outputs, final state and all gradients: in float64 (tests/test_cores.py), and the native ones in
float32 (tests/test_cores_native.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlgate.cores.presets import Preset


def cumax_backward(dy: Tensor, s: Tensor) -> Tensor:
    """Gradient of cumsum(softmax(z)) w.r.t. z (last axis), given dy = dL/dy and s = softmax(z)."""
    ds = dy.flip(-1).cumsum(-1).flip(-1)  # dL/ds_k = sum_{j >= k} dy_j
    ds.mul_(s)
    return torch.addcmul(ds, s, ds.sum(-1, keepdim=True), value=-1.0)  # s (ds - <ds, s>)


# Elements ([steps x B x H]) per backward chunk: 512 KiB of fp32 per H-wide factor.
_CHUNK_ELEMENTS = 1 << 17


def _one_minus_sq(one: Tensor, v: Tensor) -> Tensor:
    """1 - v^2 in one op (derivative of tanh given its output)."""
    return torch.addcmul(one, v, v, value=-1.0)


class _Matmuls:
    """The matmuls of the fused loop that kernels may do their own way (the native kernels)."""

    @staticmethod
    def project(x2: Tensor, w_ih: Tensor, b_ih: Tensor) -> Tensor:
        """The input projection of all steps: [T B, I] -> [T B, G]."""
        return torch.addmm(b_ih, x2, w_ih.t())

    @staticmethod
    def recurrent_grad(dzh_t: Tensor, w_hh: Tensor, dh_direct: Tensor | None) -> Tensor:
        """dL/dh_{t-1} = dh_direct + dzh_t W_hh."""
        return torch.mm(dzh_t, w_hh) if dh_direct is None else torch.addmm(dh_direct, dzh_t, w_hh)


class LSTMKernel(_Matmuls):
    """Gate math of the LSTM family with its hand-derived backward (blocks: see LSTMCore).

    Every block order puts the blocks whose gradient is dc times a per-unit factor first
    (k of them: [i, f, u], [r, f, u] or [f, u]) and the output gate o right after them.
    """

    same_dz = True
    native = False
    chunk_elements = _CHUNK_ELEMENTS

    def __init__(self, preset: Preset, blocks: dict[str, slice], chunk_size: int):
        self.p = preset
        self.b = blocks
        self.chunk = chunk_size
        self.k = 3 if (preset.refine or not preset.tied) else 2

    def allocate(
        self, t_len: int, batch: int, rest0: tuple[Tensor, ...], like: Tensor, g: int
    ) -> None:
        (c0,) = rest0
        hid = c0.shape[-1]
        new = c0.new_empty
        self.one = c0.new_ones(())
        self.A = new(t_len, batch, g)  # sigmoid of z; the u block holds tanh(z_u)
        self.C = new(t_len + 1, batch, hid)  # C[t] = c_{t-1} as step t saw it (after reset)
        self.C[0].copy_(c0)
        self.TC = new(t_len, batch, hid)  # tanh(c_t)
        p = self.p
        if p.refine or p.master:
            self.G = new(t_len, batch, hid)  # effective gate g
        if p.forget_act == "cumax":
            self.S = new(t_len, batch, hid)  # softmax of z_f
            self.F = new(t_len, batch, hid)  # f = cumsum(S)
        if p.master:
            # the two master gates side by side: [..., 0, :] is f~, [..., 1, :] is i~
            self.n_master = self.b["mf"].stop - self.b["mf"].start
            self.SM = new(t_len, batch, 2, self.n_master)  # softmax of z_f~, z_i~
            self.M = new(t_len, batch, 2, hid)  # f~ and i~, broadcast over chunks
            self.IH = new(t_len, batch, hid)
        self.dc: Tensor | None = None
        # Per-step views made once per call (a view costs a dispatch; the loop is hot).
        self.z = new(batch, g)
        self.z_u = self.z[:, self.b["u"]]
        self.z_f = self.z[:, self.b["f"]]
        if p.master:
            self.z_m = self.z[:, self.b["mf"].start : self.b["mi"].stop].view(batch, 2, -1)
        self.views = {n: self.A[:, :, sl].unbind(0) for n, sl in self.b.items()}
        self.views.update(A=self.A.unbind(0), C=self.C.unbind(0), TC=self.TC.unbind(0))
        for name in ("G", "S", "F"):
            if hasattr(self, name):
                self.views[name] = getattr(self, name).unbind(0)

    def reset(self, t: int, keep_t: Tensor) -> None:
        self.C[t].mul_(keep_t)

    def final_rest(self) -> tuple[Tensor, ...]:
        return (self.C[-1].clone(),)

    def _expand(self, m: Tensor) -> Tensor:
        return m if self.chunk == 1 else torch.repeat_interleave(m, self.chunk, dim=-1)

    def _reduce(self, m: Tensor) -> Tensor:
        return m if self.chunk == 1 else m.unflatten(-1, (-1, self.chunk)).sum(-1)

    def _gate_g(self, a: Tensor, t0: int, t1: int) -> Tensor:
        """The effective gate g for steps t0..t1-1: the factor of the c recursion."""
        p = self.p
        if p.refine or p.master:
            return self.G[t0:t1]
        if p.forget_act == "cumax":
            return self.F[t0:t1]
        return a[..., self.b["f"]]

    # ------------------------------------------------------------------ forward
    def forward_step(self, t, xw_t, h, w_hh_t, b_hh, y_t) -> None:
        p, v = self.p, self.views
        z = torch.addmm(xw_t, h, w_hh_t, out=self.z)  # [B, G]
        self.z_u.mul_(2.0)  # tanh(x) = 2 sigmoid(2x) - 1: one sigmoid call for every block
        a = torch.sigmoid(z, out=v["A"][t])
        u = v["u"][t].mul_(2.0).sub_(1.0)
        c, c_new = v["C"][t], v["C"][t + 1]
        if p.tied:
            if p.forget_act == "sigmoid":
                f = v["f"][t]
            else:
                s = v["S"][t]
                s.copy_(torch.softmax(self.z_f, dim=-1))
                f = torch.cumsum(s, -1, out=v["F"][t])
            if p.refine:
                d = torch.addcmul(f, f, f, value=-1.0)  # f (1 - f)
                # g = f^2 + 2 r f (1 - f) = (f - d) + 2 r d
                g = torch.addcmul(f - d, v["r"][t], d, value=2.0, out=v["G"][t])
            else:
                g = f
            torch.addcmul(u, g, c - u, out=c_new)  # g c + (1 - g) u
        elif p.master:
            i, f = v["i"][t], v["f"][t]
            sm = self.SM[t]
            sm.copy_(torch.softmax(self.z_m, dim=-1))
            cm = sm.cumsum(-1)  # [B, 2, n]
            cm[:, 1].neg_().add_(1.0)  # i~ = 1 - cumax(z_i~)
            m = self.M[t]
            m.copy_(self._expand(cm))
            mf, mi = m[:, 0], m[:, 1]
            w = mf * mi
            g = torch.add(mf, (f - 1.0).mul_(w), out=self.G[t])  # f w + (mf - w)
            ih = torch.add(mi, (i - 1.0).mul_(w), out=self.IH[t])  # i w + (mi - w)
            torch.mul(g, c, out=c_new).addcmul_(ih, u)
        else:
            torch.mul(v["f"][t], c, out=c_new).addcmul_(v["i"][t], u)
        del a
        tc = torch.tanh(c_new, out=v["TC"][t])
        torch.mul(v["o"][t], tc, out=y_t)

    # ------------------------------------------------------------------ backward
    def coefficients(self, t0: int, t1: int, h_prev: Tensor):
        """Per-unit derivative factors of steps t0..t1-1, vectorised over those steps.

        Returns a tuple of [n, B, ...] tensors (n = t1 - t0):
            k1: dc_t = dc_{t+1} g_{t+1} + dh_t * k1 (k1 = o (1 - tanh^2 c)),
            ko: dz_o = dh_t * ko,
            kc: [n, B, k, H], dz of the first k blocks = dc_t * kc (for a cumax f, the f
                block holds dL/df / dc, finished per step by ``cumax_backward``),
            kg: dc_{t-1} (direct) = dc_t * kg,
            and for the om-lstm km, [n, B, 2, H]: dL/d(f~, -i~) per unit of dc.
        """
        b, p, one = self.b, self.p, self.one
        a = self.A[t0:t1]
        tc, cp = self.TC[t0:t1], self.C[t0:t1]
        o, u = a[..., b["o"]], a[..., b["u"]]
        dsig = torch.addcmul(a, a, a, value=-1.0)  # a (1 - a) for every sigmoid block
        k1 = _one_minus_sq(one, tc).mul_(o)
        ko = torch.mul(tc, dsig[..., b["o"]])
        n, batch, hid = tc.shape
        kc = tc.new_empty(n, batch, self.k, hid)
        du = _one_minus_sq(one, u)
        g = self._gate_g(a, t0, t1)
        extra = ()
        if p.tied:
            dgc = torch.sub(cp, u)  # dL/dg per unit of dc
            ku, kf = kc[:, :, self.k - 1], kc[:, :, self.k - 2]
            torch.addcmul(du, du, g, value=-1.0, out=ku)  # (1 - g)(1 - u^2)
            if p.forget_act == "sigmoid":
                f = a[..., b["f"]]
                df_dz = dsig[..., b["f"]]
            else:
                f = self.F[t0:t1]
                df_dz = torch.addcmul(f, f, f, value=-1.0)
            if p.refine:
                r = a[..., b["r"]]
                dgc.mul_(2.0)
                torch.mul(dgc, df_dz, out=kc[:, :, 0]).mul_(dsig[..., b["r"]])  # 2 dg f(1-f) r'
                torch.add(f, r, out=kf).addcmul_(r, f, value=-2.0).mul_(dgc)  # 2 dg (f+r-2rf)
            else:
                kf.copy_(dgc)
            if p.forget_act == "sigmoid":
                kf.mul_(df_dz)
        else:
            i, f = a[..., b["i"]], a[..., b["f"]]
            if p.master:
                mf, mi = self.M[t0:t1, :, 0], self.M[t0:t1, :, 1]
                w = mf * mi
                torch.mul(u, w, out=kc[:, :, 0]).mul_(dsig[..., b["i"]])
                torch.mul(cp, w, out=kc[:, :, 1]).mul_(dsig[..., b["f"]])
                torch.mul(du, self.IH[t0:t1], out=kc[:, :, 2])
                dw = (f - 1.0).mul_(cp).addcmul_(i - 1.0, u)  # dL/domega per unit of dc
                km = tc.new_empty(n, batch, 2, hid)  # dL/d(f~, -i~) per unit of dc
                torch.addcmul(cp, dw, mi, out=km[:, :, 0])
                torch.addcmul(u, dw, mf, out=km[:, :, 1]).neg_()
                extra = (km,)
            else:
                torch.mul(u, dsig[..., b["i"]], out=kc[:, :, 0])
                torch.mul(cp, dsig[..., b["f"]], out=kc[:, :, 1])
                torch.mul(du, i, out=kc[:, :, 2])
        return (k1, ko, kc, g, *extra)

    def backward_step(self, t, j, co, dh, dy_t, dz, _dzh):
        """Step t (index j in its coefficient chunk); dz is [B, G]."""
        if dy_t is not None:
            dh = dh + dy_t
        k1, ko, kc, kg = co[:4]
        b, batch, hid = self.b, dh.shape[0], dh.shape[1]
        dc = dh * k1[j] if self.dc is None else torch.addcmul(self.dc, dh, k1[j])
        torch.mul(dc.unsqueeze(1), kc[j], out=dz[:, : self.k * hid].view(batch, self.k, hid))
        torch.mul(dh, ko[j], out=dz[:, b["o"]])
        if self.p.forget_act == "cumax":
            dz[:, b["f"]] = cumax_backward(dz[:, b["f"]], self.S[t])
        if self.p.master:
            dm = self._reduce(dc.unsqueeze(1) * co[4][j])  # [B, 2, n]
            dz_m = dz[:, b["mf"].start : b["mi"].stop].view(batch, 2, -1)
            dz_m.copy_(cumax_backward(dm, self.SM[t]))
        self.dc = dc.mul_(kg[j])
        return None

    def reset_grad(self, keep_t: Tensor) -> None:
        if self.dc is not None:
            self.dc.mul_(keep_t)

    def init_grad(self, drest: tuple[Tensor | None, ...]) -> None:
        (dc,) = drest
        self.dc = None if dc is None else dc.clone()

    def grad_rest(self, like: Tensor) -> tuple[Tensor, ...]:
        return (torch.zeros_like(like) if self.dc is None else self.dc,)


class GRUKernel(_Matmuls):
    """Gate math of the GRU family (blocks r, z, n[, rho]) with its hand-derived backward."""

    same_dz = False
    native = False
    chunk_elements = _CHUNK_ELEMENTS

    def __init__(self, preset: Preset, hidden_size: int):
        d = hidden_size
        self.refine = preset.refine
        self.k = 4 if preset.refine else 3
        self.r, self.z, self.n, self.rho = (slice(k * d, (k + 1) * d) for k in range(4))

    def allocate(
        self, t_len: int, batch: int, rest0: tuple[Tensor, ...], like: Tensor, g: int
    ) -> None:
        new = like.new_empty
        self.one = like.new_ones(())
        self.A = new(t_len, batch, g)  # sigmoid(xw + gh); the n block holds n = tanh(...)
        self.GH = new(t_len, batch, g)  # W_hh h + b_hh
        if self.refine:
            self.G = new(t_len, batch, like.shape[-1])

    def reset(self, t: int, keep_t: Tensor) -> None:
        pass

    def final_rest(self) -> tuple[Tensor, ...]:
        return ()

    def forward_step(self, t, xw_t, h, w_hh_t, b_hh, y_t) -> None:
        gh = torch.addmm(b_hh, h, w_hh_t, out=self.GH[t])
        a = torch.sigmoid(torch.add(xw_t, gh), out=self.A[t])  # the n block is overwritten
        r, z = a[:, self.r], a[:, self.z]
        n = a[:, self.n]
        torch.tanh(torch.addcmul(xw_t[:, self.n], r, gh[:, self.n]), out=n)
        if self.refine:
            d = torch.addcmul(z, z, z, value=-1.0)  # z (1 - z)
            g = torch.addcmul(z - d, a[:, self.rho], d, value=2.0, out=self.G[t])
        else:
            g = z
        torch.addcmul(n, g, h - n, out=y_t)  # g h + (1 - g) n

    def coefficients(self, t0: int, t1: int, h_prev: Tensor):
        """Per-unit factors of steps t0..t1-1: dzx = dh * kx, dzh = dh * kh ([n, B, k, H]),
        dh_{t-1} (direct) = dh * g."""
        a, gh = self.A[t0:t1], self.GH[t0:t1]
        r, z, n = a[..., self.r], a[..., self.z], a[..., self.n]
        g = self.G[t0:t1] if self.refine else z
        nt, batch, hid = r.shape
        dsig = torch.addcmul(a, a, a, value=-1.0)
        kx = a.new_empty(nt, batch, self.k, hid)
        kn = _one_minus_sq(self.one, n)
        torch.addcmul(kn, kn, g, value=-1.0, out=kx[:, :, 2])  # (1 - g)(1 - n^2)
        torch.mul(kx[:, :, 2], gh[..., self.n], out=kx[:, :, 0]).mul_(dsig[..., self.r])
        dgh = torch.sub(h_prev, n)  # dL/dg per unit of dh
        dsig_z = dsig[..., self.z]
        if self.refine:
            rho = a[..., self.rho]
            dgh.mul_(2.0)
            torch.mul(dgh, dsig_z, out=kx[:, :, 3]).mul_(dsig[..., self.rho])
            torch.add(z, rho, out=kx[:, :, 1]).addcmul_(rho, z, value=-2.0).mul_(dgh)
            kx[:, :, 1].mul_(dsig_z)
        else:
            torch.mul(dgh, dsig_z, out=kx[:, :, 1])
        kh = kx.clone()
        kh[:, :, 2].mul_(r)
        return (kx, kh, g)

    def backward_step(self, t, j, co, dh, dy_t, dzx, dzh):
        if dy_t is not None:
            dh = dh + dy_t
        kx, kh, g = co
        batch, hid = dh.shape
        d = dh.unsqueeze(1)
        torch.mul(d, kx[j], out=dzx.view(batch, self.k, hid))
        torch.mul(d, kh[j], out=dzh.view(batch, self.k, hid))
        return dh * g[j]

    def reset_grad(self, keep_t: Tensor) -> None:
        pass

    def init_grad(self, drest) -> None:
        pass

    def grad_rest(self, like: Tensor) -> tuple[Tensor, ...]:
        return ()
