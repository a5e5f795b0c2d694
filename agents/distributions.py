"""Action distributions, one per action space, used by acting and by every learner alike.

``make_action_dist(space)`` picks from ``ACTION_DISTS``:

| space            | distribution                                   | policy outputs      |
|------------------|------------------------------------------------|---------------------|
| Discrete(n)      | Categorical                                    | n logits            |
| MultiDiscrete    | independent Categoricals, one per entry         | sum(nvec) logits    |
| Box              | diagonal Gaussian, learned state-independent log-std | mean, prod(shape) |
| MultiBinary(n)   | independent Bernoullis                          | n logits            |

Log-probabilities and entropies come from ``torch.distributions`` (``dist``), so acting and
learning share one definition. Sampling draws from an explicit ``torch.Generator`` (the
run's action stream, for reproducible runs) with the same distributions.

Box bounds: the policy's Gaussian is unbounded; the sample is kept as it is for the
log-probability and the learner, and the env gets it clipped to the bounds (``env_action``;
CleanRL's and Stable-Baselines3's choice). The previous-action input of the core is the
clipped action, what the env did.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal

from rlgate.agents.encoders import multi_one_hot
from rlgate.envs.spaces import check_action_space


def categorical_sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of probs [B, K] -> [B], the draw ``torch.multinomial(probs, 1,
    generator=generator)`` makes, with the same random numbers (its one-sample path: argmax
    of p / q with q ~ Exp(1), the exponential form of the Gumbel-max trick), minus its checks
    that the probabilities are finite and sum to more than 0: those read the tensor back to
    the host (a device sync per step on a GPU) and cost the CPU acting step as much as the
    draw. The probabilities come from a softmax, and a non-finite policy already stops the
    learner (``Learner.gradient_step``)."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(dim=-1)


def softmax_rows(params: Tensor) -> Tensor:
    """softmax(params, dim=-1) for params [B, n], contiguous. PyTorch's CPU softmax over a last
    dimension of a few entries runs one row at a time; over the first dimension of the
    transposed view it runs across rows (1.4x at [64, 7], 7x at [2048, 7])."""
    return torch.softmax(params.t(), dim=0).t().contiguous()


def log_softmax_columns(logits: Tensor) -> Tensor:
    """Logits [.., n] -> log-probabilities [n, N] (N: the leading entries, flattened), over the
    transposed view as ``softmax_rows``. The one log-softmax of a Categorical policy: acting's
    log-probabilities and the PPO learner's (agents.ppo.categorical_ppo_loss) are this, op for
    op, so that PPO's first ratio is exactly 1."""
    return torch.log_softmax(logits.reshape(-1, logits.shape[-1]).t(), dim=0)


class ActionDist(nn.Module):
    """What the agent needs of an action space.

    Attributes:
        param_size: policy outputs per step.
        shape: the shape of one action ([] for Discrete).
        dtype: torch.long (Discrete, MultiDiscrete) or torch.float32 (Box, MultiBinary).
        feature_size: size of ``features(action)``, the previous action fed to the core.
    """

    param_size: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    feature_size: int

    def dist(self, params: Tensor) -> Distribution:
        """The distribution of the actions given policy outputs [.., param_size];
        ``log_prob(action)`` and ``entropy()`` are [..]."""
        raise NotImplementedError

    def log_prob(self, params: Tensor, action: Tensor) -> Tensor:
        """``dist(params).log_prob(action)`` [..]: the acting step's, where a subclass may
        compute the same numbers without building the distribution."""
        return self.dist(params).log_prob(action)

    def sample(self, params: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """One action per row of params [B, param_size] -> [B, *shape]: drawn with
        ``generator``, or the most likely one (``greedy``)."""
        raise NotImplementedError

    def features(self, action: Tensor) -> Tensor:
        """[.., *shape] actions -> [.., feature_size] float."""
        raise NotImplementedError

    def env_action(self, action: Tensor) -> Tensor:
        """What the env is given for ``action`` [B, *shape]: Discrete and MultiDiscrete
        indices plus the space's ``start``, Box samples clipped to the bounds."""
        return action


class CategoricalDist(ActionDist):
    """Discrete(n): a Categorical over n logits; the action is the index 0..n-1."""

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__()
        self.n, self.start = int(space.n), int(space.start)
        self.param_size = self.feature_size = self.n
        self.shape, self.dtype = (), torch.long

    def dist(self, params: Tensor) -> Distribution:
        return Categorical(logits=params, validate_args=False)

    def log_prob(self, params: Tensor, action: Tensor) -> Tensor:
        logp = log_softmax_columns(params)  # [n, B]
        return logp.gather(0, action.reshape(1, -1)).reshape(action.shape)

    def sample(self, params, generator, greedy):
        if greedy:
            return params.argmax(dim=-1)
        return categorical_sample(softmax_rows(params), generator)

    def features(self, action: Tensor) -> Tensor:
        return F.one_hot(action, self.n).float()

    def env_action(self, action: Tensor) -> Tensor:
        return action + self.start if self.start else action


class MultiCategoricalDist(ActionDist):
    """MultiDiscrete(nvec): one Categorical per entry, their product (log-probs summed).

    The logits of entry k are params[..., offset_k : offset_k + nvec_k]; they are laid out
    as [.., entries, max(nvec)] with -inf padding, so that one ``Independent(Categorical)``
    covers entries of different sizes (a padded choice has probability 0 and adds nothing to
    the entropy)."""

    def __init__(self, space: gym.spaces.MultiDiscrete):
        super().__init__()
        nvec = np.asarray(space.nvec)
        self.shape, self.dtype = tuple(nvec.shape), torch.long
        flat = torch.as_tensor(nvec.reshape(-1), dtype=torch.long)
        self.entries, self.width = int(flat.numel()), int(flat.max())
        self.param_size = self.feature_size = int(flat.sum())
        # the padded layout: index into [params, -inf] per (entry, choice)
        offsets = torch.cumsum(flat, 0) - flat
        choice = torch.arange(self.width)
        index = torch.where(choice < flat[:, None], offsets[:, None] + choice, self.param_size)
        self.register_buffer("_index", index.reshape(-1), persistent=False)
        self.register_buffer("_offsets", offsets, persistent=False)
        start = torch.as_tensor(np.asarray(space.start).reshape(self.shape), dtype=torch.long)
        self.register_buffer("_start", start, persistent=False)

    def _padded(self, params: Tensor) -> Tensor:
        pad = params.new_full((*params.shape[:-1], 1), float("-inf"))
        padded = torch.cat([params, pad], dim=-1)[..., self._index]
        return padded.reshape(*params.shape[:-1], self.entries, self.width)

    def dist(self, params: Tensor) -> Distribution:
        return _Reshaped(
            Independent(Categorical(logits=self._padded(params), validate_args=False), 1),
            self.shape,
        )

    def sample(self, params, generator, greedy):
        logits = self._padded(params)
        if greedy:
            flat = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1).reshape(-1, self.width)
            flat = categorical_sample(probs, generator).reshape(logits.shape[:-1])
        return flat.reshape(*params.shape[:-1], *self.shape)

    def features(self, action: Tensor) -> Tensor:
        lead = action.shape[: action.dim() - len(self.shape)]
        return multi_one_hot(action.reshape(*lead, self.entries), self._offsets, self.feature_size)

    def env_action(self, action: Tensor) -> Tensor:
        return action + self._start


class GaussianDist(ActionDist):
    """Box: a diagonal Gaussian with the policy's mean and a learned state-independent log-std
    (initialised to ``log_std_init``); the env gets the sample clipped to the bounds."""

    def __init__(self, space: gym.spaces.Box, log_std_init: float = 0.0):
        super().__init__()
        self.shape, self.dtype = tuple(space.shape), torch.float32
        self.param_size = self.feature_size = int(np.prod(space.shape))
        self.log_std = nn.Parameter(torch.full((self.param_size,), float(log_std_init)))
        low = torch.as_tensor(np.asarray(space.low, dtype=np.float32).reshape(-1))
        high = torch.as_tensor(np.asarray(space.high, dtype=np.float32).reshape(-1))
        self.register_buffer("_low", low, persistent=False)
        self.register_buffer("_high", high, persistent=False)

    def dist(self, params: Tensor) -> Distribution:
        std = self.log_std.exp().expand_as(params)
        flat = Independent(Normal(params, std, validate_args=False), 1)
        return _Reshaped(flat, self.shape)

    def sample(self, params, generator, greedy):
        if greedy:
            flat = params
        else:
            noise = torch.randn(
                params.shape, generator=generator, device=params.device, dtype=params.dtype
            )
            flat = params + self.log_std.exp() * noise
        return flat.reshape(*params.shape[:-1], *self.shape)

    def _clip(self, action: Tensor) -> Tensor:
        lead = action.shape[: action.dim() - len(self.shape)]
        flat = action.reshape(*lead, self.param_size)
        return torch.maximum(torch.minimum(flat, self._high), self._low)

    def features(self, action: Tensor) -> Tensor:
        return self._clip(action)

    def env_action(self, action: Tensor) -> Tensor:
        return self._clip(action).reshape(action.shape)


class BernoulliDist(ActionDist):
    """MultiBinary: one Bernoulli per bit, their product; actions are 0./1. floats."""

    def __init__(self, space: gym.spaces.MultiBinary):
        super().__init__()
        self.shape, self.dtype = tuple(np.atleast_1d(space.shape)), torch.float32
        self.param_size = self.feature_size = int(np.prod(self.shape))

    def dist(self, params: Tensor) -> Distribution:
        return _Reshaped(Independent(Bernoulli(logits=params, validate_args=False), 1), self.shape)

    def sample(self, params, generator, greedy):
        if greedy:
            flat = (params > 0).to(params.dtype)
        else:
            flat = torch.bernoulli(torch.sigmoid(params), generator=generator)
        return flat.reshape(*params.shape[:-1], *self.shape)

    def features(self, action: Tensor) -> Tensor:
        lead = action.shape[: action.dim() - len(self.shape)]
        return action.reshape(*lead, self.feature_size).float()


class _Reshaped:
    """A distribution over flat [.., K] events seen as events of ``shape`` (log_prob takes
    [.., *shape]); log_prob and entropy are [..]."""

    def __init__(self, base: Distribution, shape: tuple[int, ...]):
        self.base, self.shape = base, shape

    def log_prob(self, action: Tensor) -> Tensor:
        lead = action.shape[: action.dim() - len(self.shape)]
        return self.base.log_prob(action.reshape(*lead, *self.base.event_shape))

    def entropy(self) -> Tensor:
        return self.base.entropy()


#: action space type -> distribution
ACTION_DISTS: dict[type[gym.Space], type[ActionDist]] = {
    gym.spaces.Discrete: CategoricalDist,
    gym.spaces.MultiDiscrete: MultiCategoricalDist,
    gym.spaces.Box: GaussianDist,
    gym.spaces.MultiBinary: BernoulliDist,
}


def make_action_dist(space: gym.Space) -> ActionDist:
    """The distribution for an action space; UnsupportedSpace for any other space."""
    check_action_space(space)
    for kind, cls in ACTION_DISTS.items():
        if isinstance(space, kind):
            return cls(space)
    raise AssertionError(space)  # check_action_space covers ACTION_DISTS
