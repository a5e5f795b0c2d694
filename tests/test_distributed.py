"""Data-parallel training over gloo on CPU: real multi-process jobs on a tiny budget."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from rlgate import checkpoint as ckpt
from rlgate.distributed import World
from rlgate.train import merge_ranks

TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, body: str, n: int = 2) -> list[subprocess.CompletedProcess]:
    """Run ``body`` as rank 0..n-1 of one gloo job (the variables torchrun would set)."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import os, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "rank = int(os.environ['RANK'])\n"
        f"out = {str(tmp_path)!r}\n"
        + textwrap.dedent(body)
        # as the CLI does for torchrun ranks: skip the interpreter's teardown, where gloo can
        # abort the process after all work is done (pytorch#179291)
        + "\nsys.stdout.flush()\nos._exit(0)\n"
    )
    port = _free_port()
    procs = []
    for rank in range(n):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(n),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=TIMEOUT)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out))
    return results


def _check_ok(results):
    for rank, r in enumerate(results):
        assert r.returncode == 0, f"rank {rank} failed:\n{r.stdout[-3000:]}"


def test_single_process_world_is_a_no_op():
    world = World()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    assert world.all_reduce_grads([p], flag=True) is True
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert world.gather_objects("x") == ["x"] and world.broadcast_object(5) == 5
    assert world.seed(7) == 7 and World(rank=1, size=2).seed(7) != 7


def test_merge_ranks_averages_metrics_and_pools_episodes():
    a = ({"loss": 1.0}, {"return": torch.tensor([1.0, 0.0]), "success": torch.tensor([1.0, 0])})
    b = ({"loss": 3.0}, {})
    c = ({"loss": 2.0}, {"return": torch.tensor([1.0]), "success": torch.tensor([1.0])})
    metrics, stats = merge_ranks([a, b, c])
    assert metrics == {"loss": 2.0}
    assert stats["return"].tolist() == [1.0, 0.0, 1.0]
    assert stats["success"].tolist() == [1.0, 0.0, 1.0]


_GRADIENT_JOB = """
from rlgate.agents.impala import IMPALA
from rlgate.agents.ppo import PPO
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import IMPALAConfig, PPOConfig
from rlgate.distributed import World, join, world_from_env
from rlgate.envs import make_vec
from rlgate.train import build_model
from rlgate.config import TrainConfig


def split(r, lo, hi):
    cols = lambda t: t[:, lo:hi]
    return type(r)(
        obs={k: cols(v) for k, v in r.obs.items()},
        prev_action=cols(r.prev_action), prev_reward=cols(r.prev_reward),
        is_first=cols(r.is_first), actions=cols(r.actions), logp=cols(r.logp),
        values=cols(r.values), rewards=cols(r.rewards), terminated=cols(r.terminated),
        truncated=cols(r.truncated), final_values=cols(r.final_values),
        states=[tuple(s[lo:hi] for s in st) for st in r.states],
        bootstrap_value=r.bootstrap_value[lo:hi], param_version=r.param_version,
    )


def deltas(agent, world, lo, hi):
    torch.manual_seed(0)
    cfg = TrainConfig(env="rlgate/PassiveMatch-v0", num_envs=8, unroll_length=24, hidden_size=16,
                      encoder_size=16, backend="reference")
    env = make_vec(cfg.env, cfg.num_envs, seed=3, delay=4)
    model = build_model(cfg, env)
    rollout, _ = RolloutWorker(env, model, cfg.unroll_length,
                               generator=torch.Generator().manual_seed(5)).collect()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    if agent == "ppo":
        learner = PPO(model, PPOConfig(epochs=1, num_minibatches=1), 0.99, 1e9, opt, world)
    else:
        learner = IMPALA(model, IMPALAConfig(), 0.99, 1e9, opt, world)
    learner.update(split(rollout, lo, hi), torch.Generator().manual_seed(1))
    return [b - p.detach() for b, p in zip(before, model.parameters())]  # = the gradient


if os.environ.get("WORLD_SIZE"):
    world = world_from_env(60)
    join(world, torch.device("cpu"))
    half = 8 // world.size
    for agent in ("ppo", "impala"):
        g = deltas(agent, world, world.rank * half, (world.rank + 1) * half)
        torch.save(g, f"{out}/{agent}{world.rank}.pt")
"""


def test_two_process_gradient_equals_the_single_process_gradient_of_the_combined_batch(
    tmp_path,
):
    _check_ok(_launch(tmp_path, _GRADIENT_JOB))
    namespace = {"torch": torch, "os": os, "out": str(tmp_path)}
    saved = os.environ.pop("WORLD_SIZE", None)
    try:
        exec(compile(_GRADIENT_JOB, "gradient_job", "exec"), namespace)
    finally:
        if saved is not None:
            os.environ["WORLD_SIZE"] = saved
    for agent in ("ppo", "impala"):
        single = namespace["deltas"](agent, World(), 0, 8)
        ranks = [torch.load(tmp_path / f"{agent}{r}.pt") for r in range(2)]
        assert any(g.abs().max() > 1e-4 for g in single)
        for a, b, g in zip(ranks[0], ranks[1], single):
            assert torch.equal(a, b), f"{agent}: ranks applied different updates"
            torch.testing.assert_close(a, g, rtol=1e-4, atol=1e-6, msg=f"{agent} gradient")


_TRAIN_JOB = """
from rlgate.config import TrainConfig, PPOConfig
from rlgate.train import Trainer

cfg = TrainConfig(env="rlgate/TMaze-v0", num_envs=8, unroll_length=16, total_timesteps=1536,
                  hidden_size=16, encoder_size=16, logdir=out, run_name="job", progress=False,
                  checkpoint_interval=2, dist_timeout=60, ppo=PPOConfig(num_minibatches=2))
trainer = Trainer(cfg)
initial = [p.detach().clone() for p in trainer.model.parameters()]
first_obs = trainer.worker.collect(0)[0].obs
result = trainer.run()
torch.save({"initial": initial, "final": list(trainer.model.state_dict().values()),
            "obs": first_obs, "steps": result.global_step, "updates": result.updates},
           f"{out}/rank{rank}.pt")
"""


def test_ranks_hold_identical_parameters_after_updates_and_rank0_alone_writes(tmp_path):
    _check_ok(_launch(tmp_path, _TRAIN_JOB))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    for a, b in zip(r0["initial"], r1["initial"]):
        assert torch.equal(a, b)
    for a, b in zip(r0["final"], r1["final"]):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(r0["initial"], r0["final"]))
    # every rank steps its own envs with its own seed stream
    assert any(not torch.equal(r0["obs"][k], r1["obs"][k]) for k in r0["obs"])
    # 1536 steps = 6 updates of 2 ranks x 8 envs x 16 steps
    assert r0["steps"] == r1["steps"] == 1536 and r0["updates"] == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["job"]
    files = sorted(p.name for p in (tmp_path / "job").iterdir())
    assert [f for f in files if f.startswith("events")] and len(files) == 3, files
    data = ckpt.load(tmp_path / "job")
    assert data["world_size"] == 2 and data["global_step"] == 1536
    for a, b in zip(data["model"].values(), r0["final"]):
        assert torch.equal(a, b)


_CRASH_JOB = """
import time
from rlgate.distributed import DistributedError, join, world_from_env

world = world_from_env(timeout_s=15)
join(world, torch.device("cpu"))
if rank == 1:
    os._exit(3)  # a rank that dies mid-job
p = torch.nn.Parameter(torch.ones(4))
p.grad = torch.ones(4)
start = time.monotonic()
try:
    for _ in range(3):
        world.all_reduce_grads([p])
        time.sleep(0.5)
except DistributedError as err:
    print("ERROR:", err, "after", round(time.monotonic() - start), "s", flush=True)
    os._exit(1)  # as the CLI does: a broken process group is not torn down
"""


def test_a_crashed_rank_ends_the_job_with_a_clear_error(tmp_path):
    start = time.monotonic()
    results = _launch(tmp_path, _CRASH_JOB)
    assert results[1].returncode == 3
    assert results[0].returncode == 1, results[0].stdout[-3000:]
    line = [s for s in results[0].stdout.splitlines() if s.startswith("ERROR:")]
    assert line and "rank 0 of 2: gradient all-reduce failed" in line[0], results[0].stdout
    assert time.monotonic() - start < 120


def _torchrun(args: list[str], cwd, n: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={n}", "-m", "rlgate", "train", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.slow  # two torchrun jobs per agent, ~75 s
@pytest.mark.parametrize("agent", ["ppo", "impala"])
def test_torchrun_job_completes_and_resumes_with_another_world_size(tmp_path, agent):
    common = ["--agent", agent, "--num-envs", "4", "--unroll-length", "8", "--hidden-size", "16"]
    common += ["--no-progress", "--logdir", "runs"]
    if agent == "impala":
        common += ["--impala.num-actors", "1", "--impala.envs-per-actor", "4"]
    out = _torchrun([*common, "--total-timesteps", "512", "--run-name", "j"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on 2 processes" in out.stdout and out.stdout.count("rlgate: done") == 1
    assert ckpt.load(tmp_path / "runs" / "j")["global_step"] == 512
    # the same run continued by one process, then by two again
    more = subprocess.run(
        [sys.executable, "-m", "rlgate", "train", "--resume", "runs/j", "--total-timesteps", "768"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert ckpt.load(tmp_path / "runs" / "j")["global_step"] == 768
    again = _torchrun(["--resume", "runs/j", "--total-timesteps", "1024"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    data = ckpt.load(tmp_path / "runs" / "j")
    assert data["global_step"] == 1024 and data["world_size"] == 2


def test_bad_input_under_torchrun_is_one_line_and_exit_2(tmp_path):
    out = _torchrun(["--core", "nope"], tmp_path)
    assert out.returncode != 0
    # each rank that got to print (torchrun stops the others) printed one line, no traceback of
    # ours; torchrun reports the root cause with its own (launcher) traceback
    errors = [s for s in out.stderr.splitlines() if s.startswith("rlgate train: error:")]
    assert errors and "ur-lstm" in errors[0] and len(set(errors)) == 1
    assert "/rlgate/" not in out.stderr  # no frame of rlgate's own code
    assert "exitcode  : 2" in out.stderr
