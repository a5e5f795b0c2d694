"""Where a training run's wall time goes: shares of the loop's parts and the ceilings of each.

``profile_loop`` builds a run from a TrainConfig as ``rlgate train`` would (``Trainer``), then
drives its rollout worker and learner for some updates with timers around the parts:

| part | what is timed |
|---|---|
| env step | the batched env's ``step`` |
| acting forward | the policy's step while acting (``step``: encoder, core step, heads) |
| rest of the rollout | the rest of ``collect``: sampling, log-probs, buffers, episode stats |
| learner forward | the model's forward passes inside the update (``forward_seen`` too) |
| learner backward | ``backward()`` of the loss |
| Adam + clipping | gradient-norm clipping and the optimizer step |
| loss, returns, indexing | the rest of the update: GAE or V-trace, losses, minibatch slicing |

Timers wrap the calls (no profiler, no hooks inside torch), so the run's own speed is what is
measured, short of a few microseconds a call. ``ceilings`` times each part alone in the same
process: the env under fixed actions, acting alone (the policy on a fixed observation), a
whole collection, and the learner alone (updates on one stored rollout).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

#: the parts of ``profile_loop``, in table order
PARTS = (
    "env step",
    "acting forward",
    "rest of the rollout",
    "learner forward",
    "learner backward",
    "Adam + clipping",
    "loss, returns, indexing",
)


class _Clock:
    """Sums the wall time of wrapped calls per part; ``phase`` says whose forward it is."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self.phase = "acting"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def wrap(self, fn: Callable, part: Callable[[], str] | str) -> Callable:
        def timed(*args, **kwargs):
            t0 = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part() if callable(part) else part, self.now() - t0)

        return timed


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _trainer(cfg):
    from rlgate.train import Trainer

    return Trainer(cfg)


def profile_loop(cfg, updates: int = 5, warmup: int = 1) -> dict[str, float]:
    """Seconds per part (``PARTS``) and "total" over ``updates`` updates of the run ``cfg``
    describes, after ``warmup`` untimed ones. Nothing is logged or checkpointed; ``cfg``'s
    run folder is only created (``Trainer``'s rule), so point its logdir somewhere temporary.
    """
    trainer = _trainer(cfg)
    worker, learner, model = trainer.worker, trainer.learner, trainer.model
    for _ in range(warmup):
        rollout, _ = worker.collect(0)
        learner.update(rollout, trainer.generator)
    clock = _Clock(trainer.device)
    # acting runs ``step``, natively or through forward: a forward while acting is inside a
    # step, already counted
    step = clock.wrap(model.step, "acting forward")
    part = lambda: "learner forward" if clock.phase == "learner" else "inside a step"  # noqa: E731
    forward = clock.wrap(model.forward, part)
    # the seen-so-far loss's learner runs its forward through forward_seen instead
    forward_seen = clock.wrap(model.forward_seen, part)
    backward = clock.wrap(torch.Tensor.backward, "learner backward")
    clip = clock.wrap(torch.nn.utils.clip_grad_norm_, "Adam + clipping")
    opt_step = clock.wrap(trainer.optimizer.step, "Adam + clipping")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(model, "step", step))
        stack.enter_context(_patched(model, "forward", forward))
        stack.enter_context(_patched(model, "forward_seen", forward_seen))
        stack.enter_context(_patched(worker.env, "step", clock.wrap(worker.env.step, "env step")))
        stack.enter_context(_patched(torch.Tensor, "backward", backward))
        stack.enter_context(_patched(torch.nn.utils, "clip_grad_norm_", clip))
        stack.enter_context(_patched(trainer.optimizer, "step", opt_step))
        start = clock.now()
        for _ in range(updates):
            clock.phase = "acting"
            t0 = clock.now()
            rollout, _ = worker.collect(0)
            t1 = clock.now()
            clock.phase = "learner"
            learner.update(rollout, trainer.generator)
            t2 = clock.now()
            clock.add("collect", t1 - t0)
            clock.add("update", t2 - t1)
        total = clock.now() - start
    s = clock.seconds
    get = s.get
    out = {
        "env step": get("env step", 0.0),
        "acting forward": get("acting forward", 0.0),
        "learner forward": get("learner forward", 0.0),
        "learner backward": get("learner backward", 0.0),
        "Adam + clipping": get("Adam + clipping", 0.0),
    }
    out["rest of the rollout"] = get("collect", 0.0) - out["env step"] - out["acting forward"]
    out["loss, returns, indexing"] = (
        get("update", 0.0)
        - out["learner forward"]
        - out["learner backward"]
        - out["Adam + clipping"]
    )
    out = {part: out[part] for part in PARTS}
    out["total"] = total
    out["steps"] = float(updates * cfg.batch_size)
    return out


def _rate(fn: Callable[[], object], steps_per_call: int, calls: int, clock: _Clock) -> float:
    fn()  # warm-up
    t0 = clock.now()
    for _ in range(calls):
        fn()
    return steps_per_call * calls / (clock.now() - t0)


@torch.no_grad()
def _env_alone(trainer, clock: _Clock, calls: int) -> float:
    env, dist = trainer.env, trainer.model.action_dist
    action = torch.zeros(env.num_envs, *dist.shape, dtype=dist.dtype, device=trainer.device)
    env_action = dist.env_action(action)
    return _rate(lambda: env.step(env_action), env.num_envs, calls, clock)


@torch.no_grad()
def _acting_alone(trainer, clock: _Clock, calls: int) -> float:
    worker, model = trainer.worker, trainer.model
    state = [worker.state]

    def act():
        inputs = (worker.obs, worker.prev_action, worker.prev_reward, worker.is_first)
        out = model.act(*inputs, state[0], trainer.generator)
        state[0] = out[3]

    return _rate(act, trainer.env.num_envs, calls, clock)


def ceilings(cfg, updates: int = 3) -> dict[str, float]:
    """Steps/s of each part alone, in this process: "env alone", "acting alone" (the policy's
    act step, no env), "collection" (whole unrolls), "learning alone" (updates on one stored
    rollout, counted in the env steps it holds)."""
    trainer = _trainer(cfg)
    clock = _Clock(trainer.device)
    worker, learner = trainer.worker, trainer.learner
    calls = cfg.unroll_length * updates
    rollout, _ = worker.collect(0)
    return {
        "env alone": _env_alone(trainer, clock, calls),
        "acting alone": _acting_alone(trainer, clock, calls),
        "collection": _rate(lambda: worker.collect(0), cfg.batch_size, updates, clock),
        "learning alone": _rate(
            lambda: learner.update(rollout, trainer.generator), cfg.batch_size, updates, clock
        ),
    }
