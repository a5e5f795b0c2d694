"""The loop profile's accounting: every part is timed, and the parts add up to the loop."""

import pytest

from rlgate.config import TrainConfig
from rlgate.loop_profile import PARTS, ceilings, profile_loop


@pytest.fixture
def cfg(tmp_path):
    return TrainConfig(
        env="rlgate/TMaze-v0", core="lstm", num_envs=4, unroll_length=8, hidden_size=8,
        encoder_size=8, total_timesteps=10**6, logdir=str(tmp_path), progress=False,
    )  # fmt: skip


def test_parts_are_all_timed_and_add_up_to_the_loop(cfg):
    out = profile_loop(cfg, updates=2, warmup=1)
    assert list(out)[: len(PARTS)] == list(PARTS)
    # each part was reached: the wrappers sit on the calls the loop really makes
    for part in ("env step", "acting forward", "learner forward", "learner backward"):
        assert out[part] > 0, part
    assert all(out[p] >= 0 for p in PARTS)
    parts = sum(out[p] for p in PARTS)
    assert parts <= out["total"] and parts > 0.8 * out["total"]
    assert out["steps"] == 2 * cfg.batch_size


def test_the_seen_loss_forward_is_the_learner_forward(tmp_path):
    # with the seen-so-far loss the learner's forward is forward_seen, not forward
    cfg = TrainConfig(
        env="rlgate/PassiveMatch-v0", env_option=("delay=2",), core="lstm", num_envs=4,
        unroll_length=8, hidden_size=8, encoder_size=8, total_timesteps=10**6,
        logdir=str(tmp_path), progress=False, seen_loss=1.0,
    )  # fmt: skip
    out = profile_loop(cfg, updates=2, warmup=1)
    assert out["learner forward"] > 0
    parts = sum(out[p] for p in PARTS)
    assert parts <= out["total"] and parts > 0.8 * out["total"]


def test_ceilings_name_each_part(cfg):
    top = ceilings(cfg, updates=1)
    assert list(top) == ["env alone", "acting alone", "collection", "learning alone"]
    assert all(v > 0 for v in top.values())
