"""End-to-end training benchmark: rlgate's PPO (lstm and ur-lstm) on PassiveMatch (delay 30),
MemoryS7, CartPole-v1 and POPGym's RepeatPreviousEasy, next to sb3-contrib's RecurrentPPO.

Usage:
    pip install -e ".[bench]" && python scripts/bench_train.py    # 25-45 min on 2 cores
    python scripts/bench_train.py --steps 600000 --sb3-steps 20000
    python scripts/bench_train.py --tasks MemoryS7 --cores ur-lstm --no-sb3
    python scripts/bench_train.py --jobs 2 --seeds 1 2 3   # two 1-thread runs at a time
    python scripts/bench_train.py --tasks CartPole-v1 RepeatPreviousEasy --jobs 2

Every task trains its recipe (``TASKS``; ``rlgate recipes`` lists their settings: 8M steps on
PassiveMatch, 3M on MemoryS7), the same for both cores; the flags override them.

rlgate trains on its tensor clone of MemoryS7 (proven equal to minigrid's by
tests/test_envs_memory.py); CartPole-v1 and popgym-RepeatPreviousEasy-v0 are gymnasium envs,
which rlgate and RecurrentPPO both step through gymnasium's SyncVectorEnv. Throughput is end
to end: env steps over the wall time of the whole run (envs, rollouts, updates, logging).
RecurrentPPO (MlpLstmPolicy, 8 envs, n_steps 128, hidden 128) runs on the same env id as
rlgate (minigrid's own MiniGrid-MemoryS7-v0 for the MemoryS7 rows); on MemoryS7 it is slow (its
update steps the LSTM one step at a time whenever a sequence holds an episode start), so its
budget there is ``--sb3-steps``; on the gymnasium tasks it gets rlgate's budget. Targets:
ur-lstm >= 0.9 success on PassiveMatch and MemoryS7 within the budget, and rlgate's
throughput >= 50x RecurrentPPO's there. The gymnasium tasks report returns (they have no
success): CartPole-v1 pays 1 a step up to 500, RepeatPreviousEasy's returns lie in [-1, 1].
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from rlgate.benchmark import cpu_model, format_table
from rlgate.config import TrainConfig
from rlgate.evaluate import evaluate
from rlgate.recipes import RECIPES, flags
from rlgate.runtime import tune_cpu_allocator
from rlgate.train import Trainer

#: task -> the recipe it trains (``rlgate recipes NAME`` prints its settings and why they are
#: what they are), the same for every core
TASKS = {
    "PassiveMatch(delay 30)": "passive-match",
    "MemoryS7": "memory-s7",
    "CartPole-v1": "cartpole",
    "RepeatPreviousEasy": "repeat-previous-easy",
}
#: the env RecurrentPPO trains on for each task, and whether it gets rlgate's budget
SB3_ENVS = {
    "MemoryS7": ("MiniGrid-MemoryS7-v0", False),
    "CartPole-v1": ("CartPole-v1", True),
    "RepeatPreviousEasy": ("popgym-RepeatPreviousEasy-v0", True),
}
EVAL_EPISODES = 1000
#: the flags of this script that change a recipe's setting -> that setting's place
OVERRIDES = {
    "num_envs": ("num_envs",),
    "unroll_length": ("unroll_length",),
    "hidden_size": ("hidden_size", "encoder_size"),
    "head_size": ("head_size",),
    "view_gate": ("view_gate",),
    "policy_init_gain": ("policy_init_gain",),
    "reward_scale": ("reward_scale",),
    "steps": ("total_timesteps",),
    "ent_coef": ("ppo", "ent_coef"),
    "vf_coef": ("ppo", "vf_coef"),
    "epochs": ("ppo", "epochs"),
    "num_minibatches": ("ppo", "num_minibatches"),
}


def changes_from(args: argparse.Namespace) -> dict:
    """The recipe changes that this script's flags ask for (as TrainConfig.from_recipe takes)."""
    out: dict = {}
    for flag, place in OVERRIDES.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if place[0] == "ppo":
            out.setdefault("ppo", {})[place[1]] = value
        else:
            for name in place:
                out[name] = value
    return out


def run_rlgate(recipe: str, core: str, seed: int, logdir: str, changes: dict) -> dict:
    cfg = TrainConfig.from_recipe(
        recipe,
        **changes,
        core=core,
        seed=seed,
        logdir=logdir,
        progress=False,
        run_name=f"{recipe}-{core}-s{seed}",
    )
    t0 = time.perf_counter()
    result = Trainer(cfg).run()
    seconds = time.perf_counter() - t0
    success = [h["charts/success_rate"] for h in result.history if "charts/success_rate" in h]
    final = sum(success[-10:]) / len(success[-10:]) if success else float("nan")
    returns = [h["charts/episodic_return"] for h in result.history if "charts/episodic_return" in h]
    # the trained policy on fresh episodes, most likely action (the training rate above samples
    # actions and so pays for the entropy bonus's exploration)
    greedy = evaluate(
        str(Path(logdir) / cfg.run_name),
        episodes=EVAL_EPISODES,
        num_envs=64,
        device="cpu",
        seed=10_000 + seed,
        greedy=True,
    )
    return {
        "success": final,
        "return": sum(returns[-10:]) / max(1, len(returns[-10:])),
        "greedy": greedy["success_rate"],
        "sps": result.global_step / seconds,
        "seconds": seconds,
        "steps": result.global_step,
    }


def run_sb3(env_id: str, steps: int, seed: int) -> dict:
    import gymnasium as gym
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    from rlgate.envs import resolve_id

    env_id = resolve_id(env_id)  # imports minigrid or popgym, which register their ids
    wrap = None
    if env_id.startswith("MiniGrid-"):
        from minigrid.wrappers import ImgObsWrapper

        def wrap(env):
            return gym.wrappers.FlattenObservation(ImgObsWrapper(env))

    elif env_id.startswith("popgym-"):
        wrap = gym.wrappers.FlattenObservation  # its Discrete observation as a one-hot vector

    env = make_vec_env(env_id, n_envs=8, seed=seed, wrapper_class=wrap)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        env,
        n_steps=128,
        seed=seed,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 128},
        verbose=0,
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - t0
    episodes = list(model.ep_info_buffer)[-100:]
    success = sum(e["r"] > 0 for e in episodes) / max(1, len(episodes))
    return {
        # minigrid's success rule (a positive reward); the other tasks report no success
        "success": success if env_id.startswith("MiniGrid-") else float("nan"),
        "return": sum(e["r"] for e in episodes) / max(1, len(episodes)),
        "sps": model.num_timesteps / seconds,
        "seconds": seconds,
        "steps": model.num_timesteps,
    }


def _job(kind: str, args: tuple, threads: int) -> dict:
    """One benchmark run in a worker process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    tune_cpu_allocator()
    return run_sb3(*args) if kind == "sb3" else run_rlgate(*args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps", type=int, default=None, help="rlgate's budget per run (default: the task's)"
    )
    ap.add_argument("--sb3-steps", type=int, default=20_000, help="RecurrentPPO's budget")
    ap.add_argument("--cores", nargs="+", default=["lstm", "ur-lstm"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[1], help="rlgate runs each (task, core) per seed"
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, in processes of --threads threads each (every run, RecurrentPPO's "
        "too, then shares the machine alike)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--no-sb3", action="store_true", help="skip the RecurrentPPO baseline")
    ap.add_argument("--num-envs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--unroll-length", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--hidden-size", type=int, default=None, help="core and encoder size (64)")
    ap.add_argument("--head-size", type=int, default=None, help="MLP heads (64; 0: linear)")
    ap.add_argument(
        "--view-gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gated-attention heads (default: the task's)",
    )
    ap.add_argument("--policy-init-gain", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--reward-scale", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--ent-coef", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--vf-coef", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--epochs", type=int, default=None, help="PPO epochs (default: the task's)")
    ap.add_argument("--num-minibatches", type=int, default=None, help="default: the recipe's")
    args = ap.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--jobs and --threads must be >= 1")
    threads = args.threads or max(1, torch.get_num_threads() // args.jobs)
    changes = changes_from(args)
    print(
        f"# bench_train: {cpu_model()}, {args.jobs} run(s) at once x {threads} "
        f"thread(s), torch {torch.__version__}, seeds {' '.join(map(str, args.seeds))}"
    )
    for task in args.tasks:
        settings = RECIPES[TASKS[task]].with_changes(changes)
        print(f"# {task}: recipe {TASKS[task]}: {' '.join(flags(settings))}")
    runs = [(task, core, seed) for task in args.tasks for core in args.cores for seed in args.seeds]
    with (
        tempfile.TemporaryDirectory() as logdir,
        ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        sb3 = {}
        for task in [] if args.no_sb3 else [t for t in args.tasks if t in SB3_ENVS]:
            env_id, same_budget = SB3_ENVS[task]
            budget = TrainConfig.from_recipe(TASKS[task], **changes).total_timesteps
            steps = budget if same_budget else args.sb3_steps
            sb3[task] = pool.submit(_job, "sb3", (env_id, steps, args.seeds[0]), threads)
        futures = {}
        for task, core, seed in runs:
            job = (TASKS[task], core, seed, logdir, changes)
            futures[(task, core, seed)] = pool.submit(_job, "rlgate", job, threads)
        base = {task: f.result() for task, f in sb3.items()}
        results = {key: f.result() for key, f in futures.items()}

    def num(x: float, fmt: str) -> str:
        return "-" if x != x else format(x, fmt)

    rows = []
    for task, out in base.items():
        print(f"  RecurrentPPO {task}: {out}", file=sys.stderr, flush=True)
        rows.append(
            [
                SB3_ENVS[task][0],
                "sb3-contrib RecurrentPPO",
                "lstm",
                "-",
                out["steps"],
                num(out["return"], ".2f"),
                num(out["success"], ".2f"),
                "-",
                f"{out['sps']:,.0f}",
                "1.0x",
                f"{out['seconds']:.0f}",
            ]
        )
    for (task, core, seed), out in results.items():
        print(f"  {task} {core} seed {seed}: {out}", file=sys.stderr, flush=True)
        ref = base.get(task)
        rows.append(
            [
                task,
                "rlgate PPO",
                core,
                seed,
                out["steps"],
                num(out["return"], ".2f"),
                num(out["success"], ".2f"),
                num(out["greedy"], ".3f"),
                f"{out['sps']:,.0f}",
                f"{out['sps'] / ref['sps']:.0f}x" if ref else "-",
                f"{out['seconds']:.0f}",
            ]
        )
    print(
        format_table(
            [
                "task",
                "implementation",
                "core",
                "seed",
                "env steps",
                "final return (training)",
                "final success (training)",
                f"greedy success ({EVAL_EPISODES} episodes)",
                "steps/s",
                "vs RecurrentPPO (same task)",
                "seconds",
            ],
            rows,
        )
    )
    print(
        "\n# targets: ur-lstm >= 0.9 success on PassiveMatch and MemoryS7 (greedy, fresh "
        "episodes; the mean over seeds); throughput >= 50x RecurrentPPO"
    )
    for task in args.tasks:
        for core in args.cores:
            got = [results[(task, core, seed)]["greedy"] for seed in args.seeds]
            if any(g != g for g in got):  # no success to judge: the table has the returns
                continue
            mean = sum(got) / len(got)
            verdict = f" ({'met' if mean >= 0.9 else 'MISSED'})" if core == "ur-lstm" else ""
            print(
                f"{task}: {core} success {mean:.3f} over {len(got)} seed(s), "
                f"{sum(g >= 0.9 for g in got)} at >= 0.9{verdict}"
            )
    for task, ref in base.items():
        worst = min(r["sps"] for (t, _, _), r in results.items() if t == task) / ref["sps"]
        print(
            f"throughput on {task}: slowest rlgate run {worst:.0f}x RecurrentPPO"
            + (f" ({'met' if worst >= 50 else 'MISSED'})" if task == "MemoryS7" else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
