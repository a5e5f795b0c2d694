"""Recurrent PPO (Schulman et al. 2017): GAE, clipped objective, entropy bonus, value loss,
minibatches of whole sequences, several epochs, truncated BPTT from stored start states,
gradient clipping; optional recompute of the start states between epochs."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.distributions import Distribution

from rlgate.agents.distributions import CategoricalDist, log_softmax_columns
from rlgate.agents.learner import Learner
from rlgate.agents.rollout import Rollout
from rlgate.agents.seen import seen_loss
from rlgate.cores import native
from rlgate.returns import gae

#: the terms a PPO loss function returns, in this order
LOSS_TERMS = ("policy", "value", "entropy", "approx_kl", "clip_fraction")


def ppo_loss(
    dist: Distribution,
    values: Tensor,
    actions: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    returns: Tensor,
    clip_coef: float,
    adv_stats: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The clipped surrogate, value loss and entropy of one minibatch.

    Args:
        dist: the policy's action distribution at every step (log_prob and entropy [T, B]);
        values: [T, B]; actions: [T, B, *action shape]; old_logp, advantages, returns: [T, B].
        adv_stats: (mean, std) to normalise the advantages with; default: this minibatch's
            (data-parallel PPO passes those of the minibatch over all ranks).

    Returns:
        dict of the LOSS_TERMS "policy", "value", "entropy", "approx_kl", "clip_fraction"
        (scalars).
    """
    logp = dist.log_prob(actions)
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    adv = _normalised(advantages, adv_stats)
    policy = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    value = 0.5 * (values - returns).pow(2).mean()
    entropy = dist.entropy().mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    return dict(zip(LOSS_TERMS, (policy, value, entropy, approx_kl, clip_fraction)))


def _normalised(advantages: Tensor, adv_stats: tuple[Tensor, Tensor] | None) -> Tensor:
    mean, std = adv_stats if adv_stats is not None else (advantages.mean(), advantages.std())
    return (advantages - mean) / (std + 1e-8)


class _CategoricalPPO(torch.autograd.Function):
    """``ppo_loss`` of a Categorical policy, its gradient written out (see
    ``categorical_ppo_loss``): autograd through ``torch.distributions`` records ~40 small ops
    per minibatch; this runs a dozen forward and a handful backward. The logits are handled
    as [A, N] (a transposed view, no copy): PyTorch's CPU softmax and reductions over a last
    dimension of a few actions run one row at a time, ~7x slower than across the N rows."""

    @staticmethod
    def forward(ctx, logits, values, actions, old_logp, adv, returns, clip_coef):
        logp_all = log_softmax_columns(logits)  # [A, N]
        log_ratio = logp_all.gather(0, actions.unsqueeze(0)).squeeze(0) - old_logp
        ratio = log_ratio.exp()
        unclipped = -adv * ratio
        clipped = -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)
        # the clipped term is the larger: it is constant in the logits (outside the clip range;
        # inside, both terms are equal and carry the same gradient)
        kept = torch.where(unclipped >= clipped, unclipped, 0.0)
        p = logp_all.exp()
        entropy_each = -(p * logp_all).sum(0)  # [N]
        diff = values - returns
        ctx.save_for_backward(logp_all, p, entropy_each, actions, kept, diff)
        policy = torch.maximum(unclipped, clipped).mean()
        value = 0.5 * diff.square().mean()
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
        ctx.mark_non_differentiable(approx_kl, clip_fraction)
        return policy, value, entropy_each.mean(), approx_kl, clip_fraction

    @staticmethod
    @once_differentiable
    def backward(ctx, d_policy, d_value, d_entropy, _kl, _clip):
        logp_all, p, entropy_each, actions, kept, diff = ctx.saved_tensors
        n = diff.numel()
        # d policy / d log pi(a): the kept surrogate -A ratio (d ratio = ratio d log pi), / N
        d_logp = kept * (d_policy / n)
        # d log pi(a) / d logits = onehot(a) - p;  d H / d logits = -p (log p + H)
        d_logits = (logp_all + entropy_each).mul_(p).mul_(-d_entropy / n).sub_(p * d_logp)
        d_logits.scatter_add_(0, actions.unsqueeze(0), d_logp.unsqueeze(0))
        return d_logits.t(), diff * (d_value / n), None, None, None, None, None


class _NativeCategoricalPPO(torch.autograd.Function):
    """``_CategoricalPPO`` on the CPU in float32: the terms and their gradient in one native.c
    call each (``ppo_categorical_forward``/``_backward``) after torch's log-softmax (acting's
    op, so that the first epoch's ratios are exactly 1). Sums run in double."""

    @staticmethod
    def forward(ctx, logits, values, actions, old_logp, advantages, returns, clip_coef, stats):
        n, n_act = logits.shape
        logp_all = log_softmax_columns(logits).contiguous()  # [A, N]
        actions, values, returns = actions.contiguous(), values.contiguous(), returns.contiguous()
        kept, ent = logits.new_empty(n), logits.new_empty(n)
        terms = torch.empty(5, dtype=torch.float64)
        code = native.library().ppo_categorical_forward(
            n, n_act, logp_all.data_ptr(), actions.data_ptr(), old_logp.contiguous().data_ptr(),
            advantages.contiguous().data_ptr(), None if stats is None else stats.data_ptr(),
            values.data_ptr(), returns.data_ptr(), clip_coef, kept.data_ptr(), ent.data_ptr(),
            terms.data_ptr(),
        )  # fmt: skip
        _loss_checked(code, n_act)
        ctx.save_for_backward(logp_all, actions, kept, ent, values, returns)
        out = tuple(logits.new_tensor(t) for t in terms.tolist())
        ctx.mark_non_differentiable(out[3], out[4])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_policy, d_value, d_entropy, _kl, _clip):
        logp_all, actions, kept, ent, values, returns = ctx.saved_tensors
        n_act, n = logp_all.shape
        d_logits, d_values = logp_all.new_empty(n, n_act), values.new_empty(n)
        code = native.library().ppo_categorical_backward(
            n, n_act, logp_all.data_ptr(), actions.data_ptr(), kept.data_ptr(), ent.data_ptr(),
            values.data_ptr(), returns.data_ptr(), float(d_policy), float(d_value),
            float(d_entropy), d_logits.data_ptr(), d_values.data_ptr(),
        )  # fmt: skip
        _loss_checked(code, n_act)
        return d_logits, d_values, None, None, None, None, None, None


def _loss_checked(code: int, n_act: int) -> None:
    if code == -2:
        raise ValueError(f"categorical_ppo_loss: an action outside [0, {n_act})")
    if code != 0:
        raise ValueError("categorical_ppo_loss: sizes or pointers the native kernel can't read")


def _native_loss_applies(logits, values, actions, old_logp, advantages, returns) -> bool:
    """Whether ``categorical_ppo_loss`` runs natively: CPU tensors, float32 but for the int64
    actions, and the native kernels build here."""
    floats = (logits, values, old_logp, advantages, returns)
    cpu = all(t.device.type == "cpu" for t in (*floats, actions))
    typed = all(t.dtype == torch.float32 for t in floats) and actions.dtype == torch.int64
    return cpu and typed and native.available()[0]


def categorical_ppo_loss(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    returns: Tensor,
    clip_coef: float,
    adv_stats: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """``ppo_loss`` for a Categorical policy over ``logits`` [T, B, A] (actions [T, B] long,
    the rest as there), with the same terms and the gradient written out: equal to
    ``ppo_loss(Categorical(logits=logits), ...)`` up to the order of float sums. On the CPU in
    float32, one native call forward and one backward (``_NativeCategoricalPPO``); elsewhere
    a dozen torch ops (``_CategoricalPPO``)."""
    flat = lambda x: x.reshape(-1)  # noqa: E731
    rows = logits.reshape(-1, logits.shape[-1])
    tensors = (flat(values), flat(actions), flat(old_logp), flat(advantages), flat(returns))
    if _native_loss_applies(rows, *tensors):
        stats = None
        if adv_stats is not None:
            stats = torch.stack([s.detach().reshape(()) for s in adv_stats]).float().cpu()
        terms = _NativeCategoricalPPO.apply(rows, *tensors, clip_coef, stats)
    else:
        values_, actions_, old_logp_, advantages_, returns_ = tensors
        adv = _normalised(advantages_, adv_stats)
        terms = _CategoricalPPO.apply(rows, values_, actions_, old_logp_, adv, returns_, clip_coef)
    return dict(zip(LOSS_TERMS, terms))


def _sequences(x: Tensor, chunk: int) -> Tensor:
    """[T, B, ...] -> [chunk, (T / chunk) * B, ...]: sequence s = c * B + b is chunk c of env b."""
    t_len, batch = x.shape[:2]
    x = x.reshape(t_len // chunk, chunk, batch, *x.shape[2:])  # [C, L, B, ...]
    x = x.transpose(0, 1)  # [L, C, B, ...]
    return x.reshape(chunk, (t_len // chunk) * batch, *x.shape[3:])


def _pick(x: Tensor, idx: Tensor) -> Tensor:
    """The sequences ``idx`` of x [T, S, ...]: x[:, idx], as index_select (the same copy, ~10x
    faster than advanced indexing for a uint8 grid view)."""
    return x.index_select(1, idx)


class PPO(Learner):
    """The PPO learner (constructor: see ``Learner``)."""

    def _chunk_states(self, r: Rollout, chunk: int) -> list[tuple[Tensor, ...]]:
        """Start states of every BPTT chunk recomputed with the current parameters (the last
        chunk's own steps are not needed: no chunk starts after it)."""
        with torch.no_grad():
            states, state = [r.states[0]], r.states[0]
            for c in range(r.length // chunk - 1):
                sl = slice(c * chunk, (c + 1) * chunk)
                _, _, state = self.model(
                    {k: v[sl] for k, v in r.obs.items()},
                    r.prev_action[sl],
                    r.prev_reward[sl],
                    r.is_first[sl],
                    state,
                )
                states.append(state)
        return states

    def _advantage_stats(self, adv: Tensor) -> tuple[Tensor, Tensor] | None:
        """Mean and std of the advantages of the minibatch over all ranks (None: one rank)."""
        if not self.world.distributed:
            return None
        moments = torch.stack([adv.sum(), adv.pow(2).sum(), adv.new_tensor(adv.numel())])
        total, total_sq, n = self.world.sum(moments.double()).unbind()
        mean = total / n
        var = (total_sq - n * mean * mean) / (n - 1).clamp(min=1)
        return mean.to(adv.dtype), var.clamp(min=0).sqrt().to(adv.dtype)

    def update(self, r: Rollout, generator: torch.Generator | None = None) -> dict[str, float]:
        cfg, t_len = self.cfg, r.length
        chunk = cfg.bptt or t_len
        # final values are the model's, learned on scaled rewards: they need no scaling
        rewards = r.rewards * self.reward_scale
        advantages, returns = gae(
            rewards,
            r.values,
            r.next_values(),
            r.terminated,
            r.truncated,
            self.gamma,
            cfg.gae_lambda,
        )
        seq = {
            "obs": {k: _sequences(v[:t_len], chunk) for k, v in r.obs.items()},
            "prev_action": _sequences(r.prev_action[:t_len], chunk),
            "prev_reward": _sequences(r.prev_reward[:t_len], chunk),
            "is_first": _sequences(r.is_first[:t_len], chunk),
            "actions": _sequences(r.actions, chunk),
            "logp": _sequences(r.logp, chunk),
            "advantages": _sequences(advantages, chunk),
            "returns": _sequences(returns, chunk),
        }
        if self.seen_coef:
            targets, valid = self.seen_targets(r)
            seq["seen"], seq["seen_valid"] = _sequences(targets, chunk), _sequences(valid, chunk)
        # a Categorical policy's loss has its gradient written out; other spaces' goes through
        # torch.distributions
        categorical = type(self.model.action_dist) is CategoricalDist
        loss_fn = categorical_ppo_loss if categorical else ppo_loss
        num_seq = seq["actions"].shape[1]
        per_mb = num_seq // cfg.num_minibatches
        totals: dict[str, float] = {}
        count = 0
        for _ in range(cfg.epochs):
            chunk_states = self._chunk_states(r, chunk) if cfg.recompute_states else r.states
            # [C] states of [B, H] -> [C * B, H], sequence order c * B + b
            start = tuple(
                torch.cat([s[k] for s in chunk_states]) for k in range(len(chunk_states[0]))
            )
            # the generator lives on the rollout's device (the Trainer makes it so)
            perm = torch.randperm(num_seq, generator=generator, device=r.actions.device)
            for m in range(cfg.num_minibatches):
                idx = perm[m * per_mb : (m + 1) * per_mb]
                inputs = (
                    {k: _pick(v, idx) for k, v in seq["obs"].items()},
                    _pick(seq["prev_action"], idx),
                    _pick(seq["prev_reward"], idx),
                    _pick(seq["is_first"], idx),
                    tuple(s.index_select(0, idx) for s in start),
                )
                if self.seen_coef:
                    params, values, _, seen_logits = self.model.forward_seen(*inputs)
                else:
                    params, values, _ = self.model(*inputs)
                advantages_mb = _pick(seq["advantages"], idx)
                out = loss_fn(
                    params if categorical else self.model.action_dist.dist(params),
                    values,
                    _pick(seq["actions"], idx),
                    _pick(seq["logp"], idx),
                    advantages_mb,
                    _pick(seq["returns"], idx),
                    cfg.clip_coef,
                    self._advantage_stats(advantages_mb),
                )
                loss = out["policy"] - cfg.ent_coef * out["entropy"] + cfg.vf_coef * out["value"]
                if self.seen_coef:
                    out["seen"] = seen_loss(
                        seen_logits, _pick(seq["seen"], idx), _pick(seq["seen_valid"], idx)
                    )
                    loss = loss + self.seen_coef * out["seen"]
                out["grad_norm"] = torch.tensor(self.gradient_step(loss))
                out["loss"] = loss
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach())
                count += 1
        metrics = {k: v / count for k, v in totals.items()}
        var_y = returns.var()
        metrics["explained_variance"] = (
            float(1 - (returns - r.values).var() / var_y) if var_y > 0 else 0.0
        )
        return metrics
