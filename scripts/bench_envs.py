"""Environment steps per second: rlgate's tensor tasks next to the envs they clone (minigrid's,
popgym's) through gymnasium's vector envs, measured in the same run.

Usage:
    python scripts/bench_envs.py                      # every task, N in {1, 64, 1024, 8192}
    python scripts/bench_envs.py --tasks rlgate/MemoryS7-v0 --quick
    python scripts/bench_envs.py --popgym --seconds 0.5   # POPGym's 14 envs x 3 difficulties
    python scripts/bench_envs.py --paths --tasks rlgate/ActiveMatch-v0 --num-envs 32 --rounds 3

Every case steps uniform random actions (drawn beforehand) for about ``--seconds`` and reports
env steps (transitions) per second. A clone's reference (``REFERENCES``: minigrid's
MiniGrid-MemoryS7-v0, popgym's popgym-<Name><Level>-v0) runs as a plain gymnasium
``SyncVectorEnv`` and ``AsyncVectorEnv`` (numpy in and out, no conversion to tensors) at several
sizes, and the ratio is to the best of those; tasks that clone nothing are compared with
minigrid's best. The tensor envs run on one torch thread (``--threads``), as each of popgym's
runs on one core; on the CPU the envs with native kernels (envs/native.c) take them where
they build (``RLGATE_NATIVE_ENVS=0``: their PyTorch paths). Target: every clone at N=1024 on
CPU >= 100x its reference's best vector env.

``--paths`` instead compares, for every task with native kernels, its native path with its
PyTorch path on the CPU, in the same run (the same seed and actions: both paths give the same
episodes).

On a shared machine another job only ever slows a case down, so with ``--rounds R`` every case
(each reference at its best vector env after the first round) is measured R times, the rounds
interleaved, and each reports its fastest: the ratios then compare both sides at their least
disturbed.
"""

from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import torch

from rlgate.benchmark import cpu_model, format_table
from rlgate.envs import ENVS, POPGYM, make_vec, popgym_id
from rlgate.envs.gym_vector import without_text
from rlgate.runtime import tune_cpu_allocator

TASKS = [
    "rlgate/PassiveMatch-v0",
    "rlgate/ActiveMatch-v0",
    "rlgate/TMaze-v0",
    "rlgate/MemoryS7-v0",
    "rlgate/MemoryS17-v0",
]
_LEVELS = [(n, lvl) for n, c in POPGYM.items() for lvl in c.DIFFICULTIES]
POPGYM_TASKS = [f"rlgate/popgym-{n}{lvl}-v0" for n, lvl in _LEVELS]
#: tensor task -> the gymnasium id it clones
REFERENCES = {
    "rlgate/MemoryS7-v0": "MiniGrid-MemoryS7-v0",
    **{f"rlgate/popgym-{n}{lvl}-v0": popgym_id(n, lvl) for n, lvl in _LEVELS},
}
DEFAULT_REFERENCE = "MiniGrid-MemoryS7-v0"


def random_actions(space: gym.Space, n: int, count: int, device: str) -> list[torch.Tensor]:
    """``count`` batches of n uniform actions of ``space`` ([n, *shape] tensors)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        if isinstance(space, gym.spaces.Discrete):
            a = torch.randint(0, int(space.n), (n,), generator=g)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            a = (torch.rand(n, *space.shape, generator=g) * torch.as_tensor(space.nvec)).long()
        else:
            low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
            a = low + (high - low) * torch.rand(n, *space.shape, generator=g)
        out.append(a.to(device))
    return out


def _timed(step, actions: list, n: int, seconds: float, sync=None) -> float:
    for a in actions[:3]:  # warm-up
        step(a)
    steps, t0 = 0, time.perf_counter()
    while True:
        for i in range(8):
            step(actions[(steps + i) % len(actions)])
        steps += 8
        if sync is not None:
            sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps * n / elapsed


def tensor_rate(
    task: str, n: int, device: str, seconds: float, native: bool | None = None
) -> float:
    """Steps/s of ``n`` copies of ``task``; ``native`` False takes its PyTorch path (True:
    its native one, which it must have)."""
    env = make_vec(task, n, device=device, seed=0)
    if native is not None:
        if native and not env.native:
            raise ValueError(f"{task} has no native path here")
        env.native = native
    env.reset()
    actions = random_actions(env.single_action_space, n, 64, device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    return _timed(env.step, actions, n, seconds, sync)


def gymnasium_rate(env_id: str, kind: str, n: int, seconds: float) -> float:
    import minigrid  # noqa: F401 (registers the MiniGrid ids)

    if env_id.startswith("popgym-"):
        import popgym  # noqa: F401 (registers the popgym ids)
    # as rlgate's gymnasium path runs it: without the text keys no encoder reads
    fns = [lambda: without_text(gym.make(env_id))] * n
    env = gym.vector.SyncVectorEnv(fns) if kind == "sync" else gym.vector.AsyncVectorEnv(fns)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(64)]
        return _timed(env.step, actions, n, seconds)
    finally:
        env.close()


def compare_paths(tasks: list[str], sizes: list[int], seconds: float, rounds: int) -> int:
    """The table of ``--paths``: native against PyTorch path for the tasks that have both."""
    native_tasks = [t for t in tasks if make_vec(t, 1, seed=0).native]
    if not native_tasks:
        print("bench_envs: error: none of these tasks has a native path here", file=sys.stderr)
        return 2
    rates: dict[tuple[str, int, bool], float] = {}
    for round_ in range(rounds):
        for task in native_tasks:
            for n in sizes:
                for native in (True, False):
                    sps = tensor_rate(task, n, "cpu", seconds, native)
                    print(f"  [{round_ + 1}] {task} N={n} {'native' if native else 'PyTorch'}: "
                          f"{sps:,.0f}/s", file=sys.stderr, flush=True)  # fmt: skip
                    rates[task, n, native] = max(sps, rates.get((task, n, native), 0.0))
    rows = [
        [task.removeprefix("rlgate/"), n, f"{rates[task, n, True]:,.0f}",
         f"{rates[task, n, False]:,.0f}", f"{rates[task, n, True] / rates[task, n, False]:.1f}x"]
        for task in native_tasks for n in sizes
    ]  # fmt: skip
    print(format_table(["task", "N", "native steps/s", "PyTorch path steps/s", "ratio"], rows))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024, 8192])
    ap.add_argument("--tasks", nargs="+", default=None, choices=list(ENVS))
    ap.add_argument("--popgym", action="store_true", help="POPGym's clones only")
    ap.add_argument("--sync-envs", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--async-envs", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every case this many times, interleaved, and keep each one's fastest",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the tensor envs (default 1: at these sizes an op is a few "
        "microseconds, and splitting it over threads costs more than it saves)",
    )
    ap.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="measure without rlgate train's malloc settings (freed memory kept for reuse)",
    )
    ap.add_argument(
        "--paths",
        action="store_true",
        help="compare each task's native path with its PyTorch path (CPU) instead",
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        print("bench_envs: error: --rounds must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if not args.no_tune_allocator:
        tune_cpu_allocator()  # as rlgate train does; for both sides of the comparison
    if args.quick:
        args.num_envs, args.sync_envs, args.async_envs, args.seconds = [1, 1024], [16], [2], 0.5
    tasks = args.tasks or (POPGYM_TASKS if args.popgym else TASKS + POPGYM_TASKS)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"# bench_envs: {cpu_model()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, devices {devices}, ~{args.seconds}s per case, "
        f"{args.rounds} round(s)"
    )
    if args.paths:
        return compare_paths(tasks, args.num_envs, args.seconds, args.rounds)
    refs = list(dict.fromkeys(REFERENCES.get(t, DEFAULT_REFERENCE) for t in tasks))
    cases = {ref: [(kind, n) for kind, sizes in (("sync", args.sync_envs),
                                                 ("async", args.async_envs)) for n in sizes]
             for ref in refs}  # fmt: skip
    ref_rates: dict[tuple[str, str, int], float] = {}
    rates: dict[tuple[str, str, int], float] = {}
    for round_ in range(args.rounds):
        for ref in refs:
            for kind, n in cases[ref]:
                sps = gymnasium_rate(ref, kind, n, args.seconds)
                print(f"  [{round_ + 1}] {ref} {kind} N={n}: {sps:,.0f}/s", file=sys.stderr,
                      flush=True)  # fmt: skip
                ref_rates[ref, kind, n] = max(sps, ref_rates.get((ref, kind, n), 0.0))
            if round_ == 0:  # later rounds: the reference's best vector env only
                cases[ref] = [max(cases[ref], key=lambda c: ref_rates[(ref, *c)])]
        for task in tasks:
            for device in devices:
                for n in args.num_envs:
                    sps = tensor_rate(task, n, device, args.seconds)
                    print(f"  [{round_ + 1}] {task} {device} N={n}: {sps:,.0f}/s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    rates[task, device, n] = max(sps, rates.get((task, device, n), 0.0))
    best = {}
    for (ref, kind, n), sps in ref_rates.items():
        if sps > best.get(ref, (0.0, ""))[0]:
            best[ref] = (sps, f"{kind} N={n}")
    rows, missed = [], []
    for task in tasks:
        ref = REFERENCES.get(task, DEFAULT_REFERENCE)
        ref_sps, ref_case = best[ref]
        for device in devices:
            for n in args.num_envs:
                sps = rates[task, device, n]
                ratio = sps / ref_sps
                rows.append([task.removeprefix("rlgate/"), device, n, f"{sps:,.0f}", ref,
                             f"{ref_sps:,.0f} ({ref_case})", f"{ratio:,.1f}x"])  # fmt: skip
                if task in REFERENCES and device == "cpu" and n == 1024 and ratio < 100:
                    missed.append(f"{task} {ratio:.0f}x")
    head = ["task", "device", "N", "steps/s", "reference", "its best vector env", "ratio"]
    print(format_table(head, rows))
    clones = [t for t in tasks if t in REFERENCES]
    if clones and 1024 in args.num_envs:
        print(
            "\n# target: every clone at N=1024 on CPU >= 100x its reference's best vector env: "
            + ("met" if not missed else "MISSED by " + ", ".join(missed))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
