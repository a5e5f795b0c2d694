"""Adam for the training loop: torch's fused Adam kernel with the state and state_dict of
``torch.optim.Adam(fused=True)``, without ``torch.optim.Optimizer``.

Why not ``torch.optim.Adam`` itself: the first use of any ``torch.optim`` optimizer imports
``torch._dynamo`` (0.7-0.9 s of every training process on a 2-core CPU, more than a short
run's training), and its ``step`` spends ~100 us a call on bookkeeping that a model of a few
dozen parameters does not need. The update is the same kernel (``torch._fused_adam_``, CPU and
CUDA) called the same way, so both give the same parameters bit for bit (tests/test_optim.py),
and their state_dicts load into each other: checkpoints move freely between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

#: the settings of a torch.optim.Adam param group besides lr, betas and eps, as this Adam runs
_FIXED = {
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


class Adam:
    """Adam (Kingma & Ba 2015) over one group of float parameters, no weight decay.

    Args:
        params: the parameters (leaf tensors, all floating point, no duplicates).
        lr: learning rate; ``param_groups[0]["lr"]`` may be changed between steps (annealing).
        betas, eps: as ``torch.optim.Adam``'s.

    Attributes:
        param_groups: one dict, as ``torch.optim.Adam``'s (the keys of ``state_dict``).
        state: per parameter, once it has had a gradient: ``step`` (float32 scalar on the
            parameter's device, as fused Adam keeps it), ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        params = list(params)
        if not params:
            raise ValueError("Adam got no parameters")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("Adam got some parameter twice")
        for p in params:
            if not p.is_leaf or not p.is_floating_point() or p.is_complex():
                raise ValueError("Adam takes real floating-point leaf tensors")
        self.param_groups = [
            {"lr": lr, "betas": tuple(betas), "eps": eps, **_FIXED, "params": params}
        ]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @property
    def params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def _state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return state

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter that has a gradient (the others keep theirs)."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        # the fused kernel takes tensors of one device and dtype at a time
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in self.params:
            if p.grad is not None:
                if p.grad.is_sparse:
                    raise RuntimeError("Adam does not take sparse gradients")
                by_kind.setdefault((p.device, p.dtype), []).append(p)
        for params in by_kind.values():
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def state_dict(self) -> dict[str, Any]:
        """As ``torch.optim.Adam(fused=True).state_dict()``: state by parameter index, the
        group's settings with ``params`` as indices (tensors are the live ones, not copies)."""
        index = {p: i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        return {
            "state": {index[p]: dict(s) for p, s in self.state.items()},
            "param_groups": [group],
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Load a ``state_dict`` of this Adam or of ``torch.optim.Adam`` (fused or not) over
        the same parameters; its lr, betas and eps replace the current ones.

        Raises:
            ValueError: the state_dict is of other parameters or settings; nothing is changed.
        """
        groups = data["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(
                f"the optimizer state has parameter groups of {sizes} parameters; "
                f"this model has one group of {len(self.params)}"
            )
        saved = groups[0]
        for key in ("weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"):
            # (foreach, capturable, differentiable and fused say how torch's Adam ran)
            if saved.get(key, _FIXED[key]) != _FIXED[key]:
                raise ValueError(
                    f"the optimizer state has {key}={saved[key]!r}; Adam here runs {_FIXED[key]!r}"
                )
        order = {pid: i for i, pid in enumerate(saved["params"])}
        state: dict[Tensor, dict[str, Tensor]] = {}
        for pid, entry in data["state"].items():
            if pid not in order:
                raise ValueError(f"the optimizer state has an entry for unknown parameter {pid}")
            p = self.params[order[pid]]
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(entry[key].shape) != tuple(p.shape):
                    raise ValueError(
                        f"the optimizer state's {key} of parameter {order[pid]} has shape "
                        f"{tuple(entry[key].shape)}; the parameter has {tuple(p.shape)}"
                    )
            state[p] = {
                "step": torch.as_tensor(entry["step"]).to(p.device, torch.float32).clone(),
                "exp_avg": entry["exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": entry["exp_avg_sq"].to(p.device, p.dtype).clone(),
            }
        self.state = state
        group = self.param_groups[0]
        group["lr"], group["betas"], group["eps"] = saved["lr"], tuple(saved["betas"]), saved["eps"]
