"""Pictures and videos: every tensor task renders through gymnasium's render_mode, the
picture shows the state it claims to, identically seeded envs give identical infos, and
episodes become GIFs in a file and in TensorBoard."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence
from PIL import Image

from rlgate.envs import ENVS, make_vec, render
from rlgate.envs.grid import AGENT_RGB, APPLE, RADIUS, SQUARE_RGB, WALL_RGB

TASKS = ["rlgate/PassiveMatch-v0", "rlgate/ActiveMatch-v0", "rlgate/TMaze-v0",
         "rlgate/MemoryS7-v0", "rlgate/MemoryS13-v0"]  # fmt: skip


@pytest.mark.parametrize("env_id", TASKS)
def test_gymnasium_render_modes(env_id):
    """render_mode=None (what SB3's make_vec_env passes) and "rgb_array" both work; an unknown
    mode is refused with the valid ones named."""
    assert "rgb_array" in gym.make(env_id).metadata["render_modes"]
    env = gym.make(env_id, render_mode=None)
    env.reset(seed=0)
    assert env.render() is None
    env = gym.make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=0)
    for _ in range(5):
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert frame.shape[0] % render.CELL == 0 and frame.shape[1] % render.CELL == 0
        env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="valid: None, 'rgb_array'"):
        gym.make(env_id, render_mode="human")


def _cell(frame: np.ndarray, row: int, col: int) -> np.ndarray:
    """The pixels of cell (row, col), without its grid line."""
    c = render.CELL
    return frame[row * c + 1 : (row + 1) * c, col * c + 1 : (col + 1) * c]


@pytest.mark.parametrize("env_id", ["rlgate/PassiveMatch-v0", "rlgate/TMaze-v0"])
def test_the_grid_picture_is_the_state(env_id):
    """Read back from the picture: the agent's cell holds the agent's colour, walls are wall
    coloured outside the view, apples and coloured squares are where the canvas has them."""
    env = make_vec(env_id, 3, seed=4)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        env.step(torch.randint(0, 4, (3,), generator=gen))
        for b in range(3):
            frame = env.render(b)
            grid = env.state["grid"][b].numpy()
            row, col = (int(v) for v in env.state["pos"][b])
            assert (_cell(frame, row, col) == AGENT_RGB).all(-1).any()
            for r, c in zip(*np.nonzero(grid == 1)):
                if abs(r - row) > RADIUS or abs(c - col) > RADIUS:
                    assert (_cell(frame, r, c) == WALL_RGB).all()
            for r, c in zip(*np.nonzero(grid == APPLE)):
                assert (_cell(frame, r, c) == (220, 40, 40)).all(-1).any()
            for r, c in zip(*np.nonzero(grid >= 3)):
                colour = np.array(SQUARE_RGB[grid[r, c] - 3], dtype=np.float32)
                if abs(r - row) <= RADIUS and abs(c - col) <= RADIUS:  # in the view: tinted
                    colour = colour * (1 - render.VIEW_TINT) + 255 * render.VIEW_TINT
                assert (
                    np.abs(_cell(frame, r, c).astype(np.float32) - colour.astype(np.uint8)).max()
                    <= 1
                )


def test_the_memory_picture_shows_the_agent_facing_its_direction():
    env = make_vec("rlgate/MemoryS7-v0", 1, seed=2)
    env.reset()
    for action in (0, 0, 1, 2, 1, 2):
        env.step(torch.tensor([action]))
        frame = env.render(0)
        x, y = (int(v) for v in env.state["pos"][0])
        mask = render.triangle(int(env.state["dir"][0]))
        block = frame[
            y * render.CELL : (y + 1) * render.CELL, x * render.CELL : (x + 1) * render.CELL
        ]
        assert (block[mask] == (255, 0, 0)).all()


@pytest.mark.parametrize(
    "env_id", ["rlgate/PassiveMatch-v0", "rlgate/ActiveMatch-v0", "rlgate/TMaze-v0"]
)
def test_identically_seeded_envs_have_equal_infos(env_id):
    """gymnasium's data_equivalence over many episodes: an episode's info holds only the
    statistics that apply to it (no NaN, which never equals itself)."""
    options = {"delay": 3} if "Match" in env_id else {}
    a, b = gym.make(env_id, **options), gym.make(env_id, **options)
    a.reset(seed=7)
    b.reset(seed=7)
    a.action_space.seed(1)
    ends = 0
    for _ in range(3000):
        action = a.action_space.sample()
        out_a, out_b = a.step(action), b.step(action)
        assert data_equivalence(out_a, out_b)
        if out_a[2] or out_a[3]:
            info = out_a[4]["episode"]
            assert all(v == v for v in info.values())
            if "Match" in env_id:
                positions = [k for k in info if k.startswith("success_at_")]
                assert len(positions) == 1 and info[positions[0]] == info["success"]
            ends += 1
            a.reset()
            b.reset()
    assert ends > 20


def test_every_task_renders():
    for env_id, (cls, _) in ENVS.items():
        assert "rgb_array" in cls.render_modes, env_id


def _train(tmp_path, **kw):
    from rlgate.config import TrainConfig
    from rlgate.train import Trainer

    cfg = TrainConfig(env="rlgate/TMaze-v0", env_option=("length=3",), num_envs=8,
                      unroll_length=16, total_timesteps=4 * 128, progress=False,
                      logdir=str(tmp_path), run_name="r", **kw)  # fmt: skip
    return Trainer(cfg).run()


def test_training_logs_videos_and_they_change_nothing(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlgate import checkpoint as ckpt

    with_video = _train(tmp_path / "a", video_interval=2)
    without = _train(tmp_path / "b")
    events = EventAccumulator(str(with_video.run_dir), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("videos/episode")
    assert [i.step for i in images] == [256, 512]
    gif = Image.open(__import__("io").BytesIO(images[0].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames > 1
    a, b = ckpt.load(with_video.run_dir)["model"], ckpt.load(without.run_dir)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the video's streams are its own


def test_eval_writes_a_gif_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    run = _train(tmp_path).run_dir
    out = tmp_path / "ep.gif"
    cmd = [sys.executable, "-m", "rlgate", "eval", str(run), "--video", str(out),
           "--video-episodes", "2"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    gif = Image.open(out)
    assert gif.n_frames > 2 and gif.size == tuple(
        reversed(make_vec("rlgate/TMaze-v0", 1, length=3).render(0).shape[:2])
    )
    before = out.read_bytes()
    for bad, message in (
        (out, "exists"),
        (tmp_path / "x.mp4", ".gif"),
        (tmp_path / "no" / "x.gif", "does not exist"),
    ):
        proc = subprocess.run([*cmd[:6], str(bad)], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert out.read_bytes() == before


def test_a_video_episode_ends_on_its_last_state():
    """A recorded episode has one frame per step plus the first, and its last frame is the
    episode's end (the env does not auto-reset)."""
    from rlgate import video
    from rlgate.agents.actor_critic import build_model
    from rlgate.config import TrainConfig

    cfg = TrainConfig(env="rlgate/TMaze-v0", env_option=("length=3",))
    env = video.video_env(cfg.env, cfg.env_options, "cpu", 0)
    model = build_model(cfg, env)
    frames = video.record_episodes(env, model, 1, torch.Generator().manual_seed(0))
    assert 2 <= len(frames) <= env.max_episode_steps + 1
    assert np.array_equal(frames[-1], env.render(0))
    assert bool((env.state["t"] >= env.max_episode_steps).all()) or bool(
        (env.state["pos"] == env._up).all() or (env.state["pos"] == env._down).all()
    )
