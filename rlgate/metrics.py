"""TensorBoard logging with stable tag names, and the paper's gate diagnostics (docs/gates.md,
Diagnostics).

Tags: charts/episodic_return, charts/episodic_length, charts/success_rate, charts/<extra>,
charts/learning_rate, losses/<name>, perf/sps, perf/policy_lag (IMPALA), gates/<f|r|g|timescale>
(histograms), gates/saturated_fraction (share of units with g > 0.99 or g < 0.01) and
videos/episode (an animated GIF of an episode, with --video-interval).
"""

from __future__ import annotations

import json
from typing import Any

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from rlgate.cores.gates import timescale


def gate_summary(gates: dict[str, Tensor]) -> dict[str, Tensor]:
    """Histograms to log from one step's gates: f, r, g and the timescales 1 / (1 - g)."""
    out = {k: v.detach().float().flatten().cpu() for k, v in gates.items()}
    out["timescale"] = timescale(out["g"]).clamp(max=1e4)
    return out


def saturated_fraction(g: Tensor, eps: float = 0.01) -> float:
    """Share of gate values within ``eps`` of 0 or 1."""
    return float(((g > 1 - eps) | (g < eps)).float().mean())


def episode_means(stats: dict[str, Tensor]) -> dict[str, float]:
    """Mean statistics of finished episodes under their chart tags ({} when none finished).
    NaN marks an episode a statistic does not apply to (e.g. the Match tasks' success_at_{p}):
    it is left out of that mean, and a statistic no episode has is not logged."""
    if not stats or stats["return"].numel() == 0:
        return {}
    names = {"return": "episodic_return", "length": "episodic_length", "success": "success_rate"}
    means = {f"charts/{names.get(k, k)}": float(v.float().nanmean()) for k, v in stats.items()}
    return {tag: value for tag, value in means.items() if value == value}


class Logger:
    """Writes a run's scalars, histograms and config to TensorBoard (rank 0 only)."""

    def __init__(self, run_dir: str, config: dict[str, Any], purge_step: int | None = None):
        self.writer = SummaryWriter(run_dir, purge_step=purge_step)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def gates(self, gates: dict[str, Tensor], step: int) -> None:
        summary = gate_summary(gates)
        for name, values in summary.items():
            self.writer.add_histogram(f"gates/{name}", values, step)
        self.writer.add_scalar("gates/saturated_fraction", saturated_fraction(summary["g"]), step)

    def video(self, tag: str, frames, step: int, fps: int | None = None) -> None:
        """An animated GIF of ``frames`` ([H, W, 3] uint8 each) as an image summary, which
        TensorBoard's Images tab plays."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        from rlgate import video

        height, width = frames[0].shape[:2]
        image = Summary.Image(
            height=height,
            width=width,
            colorspace=3,
            encoded_image_string=video.gif_bytes(frames, fps or video.FPS),
        )
        self.writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=image)]), step
        )

    def close(self) -> None:
        self.writer.close()
