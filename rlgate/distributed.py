"""Data-parallel training on torch.distributed: one process per rank, started by torchrun.

Every rank steps its own envs with its own seed stream, computes the loss of its share of the
batch, and the gradients are averaged with one all-reduce per gradient step, so that every rank
applies the same update and holds the same parameters. Rank 0 alone writes TensorBoard and
checkpoints. gloo on CPU, NCCL on CUDA. Every collective has a timeout: a rank that crashed or
stopped answering ends the job with a ``DistributedError`` instead of a hang.

``World()`` (size 1) is the single-process case: every method is then a no-op, so learners and
the trainer call them unconditionally.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor, nn

#: rank r's env and sampling seeds are seed + RANK_SEED_STRIDE * r (rank 0 keeps the seed)
RANK_SEED_STRIDE = 1_000_003


class DistributedError(RuntimeError):
    """A collective failed: another rank crashed, or none answered within the timeout."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank, world size, local rank and collective timeout."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = 300.0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def seed(self, base: int) -> int:
        """This rank's seed for env and sampling streams."""
        return base + RANK_SEED_STRIDE * self.rank

    @contextlib.contextmanager
    def _collective(self, what: str):
        try:
            yield
        except RuntimeError as err:  # DistBackendError and gloo/NCCL errors are RuntimeErrors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DistributedError(
                f"rank {self.rank} of {self.size}: {what} failed: another rank crashed or did "
                f"not answer within {self.timeout_s:g}s ({first[:200]})"
            ) from None

    def all_reduce_grads(self, params: list[nn.Parameter], flag: bool = False) -> bool:
        """Average the gradients of ``params`` over ranks in place, with one all-reduce.

        A parameter without a gradient counts as zero on that rank (and gets one). ``flag`` is
        or-ed over ranks in the same message (used for "my loss was not finite"); returns it.
        """
        if not self.distributed:
            return flag
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_full((1,), float(flag))])
        with self._collective("gradient all-reduce"):
            torch.distributed.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is None:
                p.grad = g
            p.grad.copy_(flat[offset : offset + n].view_as(g))
            offset += n
        return bool(flat[-1] > 0)

    def sum(self, values: Tensor) -> Tensor:
        """Elementwise sum of ``values`` over ranks (a new tensor)."""
        if not self.distributed:
            return values
        out = values.clone()
        with self._collective("all-reduce"):
            torch.distributed.all_reduce(out)
        return out

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``."""
        if not self.distributed:
            return
        with self._collective("parameter broadcast"), torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(t.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        box = [obj]
        with self._collective("broadcast"):
            torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        with self._collective("all-gather"):
            torch.distributed.all_gather_object(out, obj)
        return out


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def world_from_env(timeout_s: float = 300.0) -> World:
    """This process's World from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a world of one
    when they are not set). Nothing is joined yet: see ``join``."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World(timeout_s=timeout_s)
    return World(_env_int("RANK", 0), size, _env_int("LOCAL_RANK", 0), timeout_s)


def join(world: World, device: torch.device) -> None:
    """Join the process group (MASTER_ADDR/MASTER_PORT from the environment): NCCL when
    ``device`` is CUDA, gloo otherwise, with the world's timeout on every collective."""
    if not world.distributed or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with world._collective(f"joining the {world.size}-process group ({backend})"):
        torch.distributed.init_process_group(
            backend,
            rank=world.rank,
            world_size=world.size,
            timeout=timedelta(seconds=world.timeout_s),
        )


def close_world(world: World) -> None:
    """Leave the process group (if this process joined one), after every rank got here: a rank
    that tears down while another still talks to it can abort the process."""
    if world.distributed and torch.distributed.is_initialized():
        with world._collective("final barrier"):
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def rank_device(name: str, world: World) -> str:
    """The device name a rank should use: plain "cuda" (or auto with CUDA) -> cuda:LOCAL_RANK."""
    if world.distributed and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
        return f"cuda:{world.local_rank}"
    return name
