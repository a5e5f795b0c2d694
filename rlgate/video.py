"""Videos of a policy: episodes played by a model in a 1-copy env, frames from the env's
``render``, written as animated GIFs (Pillow) to a file or into TensorBoard.

TensorBoard shows a GIF image summary as an animation, which is what
``SummaryWriter.add_video`` writes too (it needs moviepy to encode one; Pillow, already a
dependency of matplotlib, does the same here).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

#: frames per second of the videos
FPS = 8
#: the longest video, in frames (an episode that never ends stops there)
MAX_FRAMES = 1000


def video_env(env_id: str, options: dict, device, seed: int):
    """A 1-copy env of ``env_id`` that can render: a tensor task without auto-reset (so that
    an episode's last frame is its end), or a gymnasium id made with render_mode="rgb_array".
    ValueError where the env does not render."""
    from rlgate.envs import ENVS, make_vec, resolve_id

    if resolve_id(env_id) in ENVS:
        return make_vec(env_id, 1, device=device, seed=seed, autoreset=False, **options)
    return make_vec(env_id, 1, device=device, seed=seed, render_mode="rgb_array", **options)


@torch.no_grad()
def record_episodes(
    env,
    model,
    episodes: int = 1,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    max_frames: int = MAX_FRAMES,
) -> list[np.ndarray]:
    """Frames ([H, W, 3] uint8) of ``episodes`` episodes of copy 0 of ``env`` played by
    ``model``: the first observation's picture, then one after each step."""
    dev = env.device
    frames: list[np.ndarray] = []
    for _ in range(episodes):
        obs, info = env.reset()
        frames.append(env.render(0))
        state = model.initial_state(1, dev)
        prev_a, prev_r = model.first_inputs(1, dev)
        first = info["is_first"][:1]
        while len(frames) < max_frames:
            action, _, _, state = model.act(obs, prev_a, prev_r, first, state, generator, greedy)
            obs, reward, terminated, truncated, info = env.step(
                model.action_dist.env_action(action)
            )
            done = bool(terminated[0] or truncated[0])
            if not done or not getattr(env, "autoreset", True):
                frames.append(env.render(0))  # (an auto-reset env already shows the next one)
            if done:
                break
            prev_a, prev_r, first = action, reward, torch.zeros_like(first)
    return frames


def gif_bytes(frames: list[np.ndarray], fps: int = FPS) -> bytes:
    """An animated GIF of ``frames`` (looping)."""
    from PIL import Image

    if not frames:
        raise ValueError("a video needs at least one frame")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    out = io.BytesIO()
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return out.getvalue()


def write_gif(frames: list[np.ndarray], path: str | Path, fps: int = FPS) -> Path:
    """Write ``frames`` to ``path`` (a .gif) atomically."""
    from rlgate.checkpoint import write_atomic

    data = gif_bytes(frames, fps)
    write_atomic(path, lambda f: f.write(data))
    return Path(path)


def check_video_path(path: str | Path) -> Path:
    """ValueError unless ``path`` is a .gif that can be written (its folder exists) and does
    not exist yet: checked before an evaluation starts, so nothing is overwritten."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"--video writes an animated GIF: give a .gif path, got {str(path)!r}")
    if path.exists():
        raise ValueError(f"--video {str(path)!r} exists: give a new path")
    if not path.parent.is_dir():
        raise ValueError(f"--video {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    return path
