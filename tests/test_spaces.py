"""Every observation space gets its encoder and every action space its distribution: shapes,
log-probs and entropies against formulas written by hand, the MultiDiscrete factorisation, Box
clipping, the image layout rule, and gymnasium envs of every space behind the batched API."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlgate.agents.distributions import categorical_sample, make_action_dist
from rlgate.agents.encoders import ImpalaCNN, ObsEncoder, image_layout, leaf_kind
from rlgate.agents.ppo import categorical_ppo_loss, ppo_loss
from rlgate.envs import make_vec
from rlgate.envs.spaces import UnsupportedSpace, flatten_obs, flatten_space

Box, Discrete = gym.spaces.Box, gym.spaces.Discrete
MultiDiscrete, MultiBinary = gym.spaces.MultiDiscrete, gym.spaces.MultiBinary


# ---------------------------------------------------------------- observation spaces
def test_flatten_space_names_every_leaf_of_nested_containers():
    space = gym.spaces.Dict(
        {
            "a": Discrete(3),
            "b": gym.spaces.Tuple((Box(-1, 1, (2,)), gym.spaces.Dict({"c": MultiBinary(4)}))),
            "text": gym.spaces.Text(5),
        }
    )
    leaves = flatten_space(space)
    assert list(leaves) == ["a", "b.0", "b.1.c"]
    sample = space.sample()
    flat = flatten_obs(sample, space)
    assert flat["a"] == sample["a"] and np.array_equal(flat["b.1.c"], sample["b"][1]["c"])
    assert list(flatten_space(Discrete(2))) == ["obs"]
    with pytest.raises(UnsupportedSpace, match="rlgate encodes Box, Discrete"):
        flatten_space(gym.spaces.Text(5))
    with pytest.raises(UnsupportedSpace, match="rlgate encodes"):
        flatten_space(gym.spaces.Sequence(Discrete(2)))
    with pytest.raises(UnsupportedSpace, match="no entry"):
        flatten_space(gym.spaces.Dict({"t": gym.spaces.Text(3)}))


@pytest.mark.parametrize(
    ("space", "layout"),
    [
        (Box(0, 255, (7, 7, 3), np.uint8), "hwc"),
        (Box(0, 255, (3, 64, 64), np.uint8), "chw"),
        (Box(0.0, 1.0, (12, 12, 1), np.float32), "hwc"),
        (Box(0, 255, (84, 84, 16), np.uint8), "hwc"),  # neither side small: channel-last
        (Box(-1.0, 1.0, (8, 8, 3), np.float32), None),  # not an image's bounds
        (Box(0, 255, (64, 3), np.uint8), None),  # rank 2
        (Box(-np.inf, np.inf, (4,), np.float32), None),
    ],
)
def test_image_layout_rule(space, layout):
    assert image_layout(space) == layout
    assert leaf_kind(space) == ("image" if layout else "vector")


def test_declared_kinds_win_over_what_the_space_implies():
    minigrid_like = Box(0, 255, (7, 7, 3), np.uint8)
    assert leaf_kind(minigrid_like) == "image"  # a 0..255 picture by its space alone
    assert leaf_kind(minigrid_like, "minigrid") == "minigrid"
    with pytest.raises(ValueError, match="unknown observation kind"):
        leaf_kind(minigrid_like, "pixels")


def test_every_leaf_encoder_against_a_plain_encoding():
    space = gym.spaces.Dict(
        {
            "d": Discrete(3, start=-1),
            "md": MultiDiscrete([2, 4]),
            "mb": MultiBinary(3),
            "v": Box(-5, 5, (2, 2), np.float32),
        }
    )
    enc = ObsEncoder(space, action_features=2, out_size=6)
    assert enc.kinds == {
        "d": "discrete",
        "md": "multi_discrete",
        "mb": "multi_binary",
        "v": "vector",
    }
    obs = {
        "d": torch.tensor([[-1, 1]]),
        "md": torch.tensor([[[1, 3], [0, 0]]]),
        "mb": torch.tensor([[[1, 0, 1], [0, 0, 0]]], dtype=torch.int8),
        "v": torch.arange(8.0).reshape(1, 2, 2, 2),
    }
    plain = torch.cat(
        [
            # gymnasium's Dict sorts its keys: d, mb, md, v
            torch.tensor([[[1.0, 0, 0], [0, 0, 1]]]),  # one-hot of d - start
            obs["mb"].float(),
            torch.tensor([[[0.0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 0]]]),  # [2] + [4] one-hots
            obs["v"].reshape(1, 2, 4),
        ],
        -1,
    )
    action_feats = torch.randn(1, 2, 2)
    reward = torch.tensor([[0.5, -2.0]])
    extra = torch.cat([action_feats, (reward.sign() * reward.abs().log1p())[..., None], plain], -1)
    expected = torch.relu(extra @ enc.extra.weight.t() + enc.extra.bias)
    torch.testing.assert_close(enc.embed(enc.view(obs), obs, action_feats, reward), expected)
    assert enc.view(obs) is None and not enc.has_view


@pytest.mark.parametrize("shape", [(12, 10, 3), (3, 12, 10)])
def test_cnn_reads_uint8_images_either_layout_scaled_to_unit_range(shape):
    space = Box(0, 255, shape, np.uint8)
    cnn = ImpalaCNN(space)
    x = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8)
    out = cnn(x)
    assert out.shape == (2, 3, cnn.size)
    chw = x.float() / 255.0 if shape[0] == 3 else x.permute(0, 1, 4, 2, 3).float() / 255.0
    torch.testing.assert_close(out, cnn.net(chw.reshape(6, 3, 12, 10)).reshape(2, 3, -1))


# ---------------------------------------------------------------- action distributions
def test_categorical_log_prob_and_entropy_by_hand():
    dist = make_action_dist(Discrete(4))
    logits = torch.randn(5, 3, 4)
    actions = torch.randint(0, 4, (5, 3))
    d = dist.dist(logits)
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(d.log_prob(actions), p.gather(-1, actions[..., None]).log()[..., 0])
    torch.testing.assert_close(d.entropy(), -(p * p.log()).sum(-1))
    assert dist.features(actions).shape == (5, 3, 4) and dist.param_size == 4


@pytest.mark.parametrize(
    "space", [Discrete(5), MultiDiscrete([3, 5, 2]), Box(-1, 1, (2, 3)), MultiBinary(4)]
)
def test_the_acting_log_prob_is_the_learners_to_the_bit(space):
    """The rollout's log-probabilities (``ActionDist.log_prob``, Categorical's computed without
    building the distribution) are the PPO learner's exactly (Categorical's through
    ``categorical_ppo_loss``, the others' through ``dist(params)``): its first ratio is 1
    exactly, so that the approximate KL is exactly 0. They are the distribution's to rounding."""
    torch.manual_seed(0)
    dist = make_action_dist(space)
    params = torch.randn(64, dist.param_size) * 3
    action = dist.sample(params, torch.Generator().manual_seed(1), greedy=False)
    logp = dist.log_prob(params, action)
    torch.testing.assert_close(logp, dist.dist(params).log_prob(action))
    ones = torch.ones(1, 64)
    args = (torch.zeros(1, 64), action[None], logp[None], ones, ones, 0.2)
    if isinstance(space, Discrete):
        out = categorical_ppo_loss(params[None], *args)
    else:
        out = ppo_loss(dist.dist(params[None]), *args)
    assert out["approx_kl"] == 0.0 and out["clip_fraction"] == 0.0


def test_multidiscrete_is_the_product_of_its_entries_categoricals():
    space = MultiDiscrete([2, 5, 3], start=[0, -2, 1])
    dist = make_action_dist(space)
    assert dist.param_size == 10 and dist.shape == (3,)
    params = torch.randn(4, 10)
    g = torch.Generator().manual_seed(0)
    actions = dist.sample(params, g, greedy=False)
    assert actions.shape == (4, 3)
    assert bool((actions < torch.tensor([2, 5, 3])).all()) and bool((actions >= 0).all())
    parts = params.split([2, 5, 3], dim=-1)
    logp = sum(
        F.log_softmax(p, -1).gather(-1, actions[:, k, None])[:, 0] for k, p in enumerate(parts)
    )
    entropy = sum(-(F.softmax(p, -1) * F.log_softmax(p, -1)).sum(-1) for p in parts)
    torch.testing.assert_close(dist.dist(params).log_prob(actions), logp)
    torch.testing.assert_close(dist.dist(params).entropy(), entropy)
    greedy = dist.sample(params, None, greedy=True)
    assert greedy.tolist() == torch.stack([p.argmax(-1) for p in parts], -1).tolist()
    env_actions = dist.env_action(actions)
    assert env_actions.tolist() == (actions + torch.tensor([0, -2, 1])).tolist()
    assert all(space.contains(a) for a in env_actions.numpy())
    # features: the one-hots of the entries side by side
    feats = dist.features(actions)
    plain = torch.cat([F.one_hot(actions[:, k], n) for k, n in enumerate([2, 5, 3])], -1)
    assert torch.equal(feats, plain.float())


def test_multidiscrete_sampling_follows_each_entrys_probabilities():
    dist = make_action_dist(MultiDiscrete([2, 3]))
    params = torch.log(torch.tensor([0.2, 0.8, 0.1, 0.3, 0.6])).expand(20000, 5)
    actions = dist.sample(params, torch.Generator().manual_seed(1), greedy=False)
    assert abs(actions[:, 0].float().mean().item() - 0.8) < 0.02
    freq = torch.bincount(actions[:, 1], minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.3, 0.6]), atol=0.02, rtol=0)


@pytest.mark.parametrize("rows,k", [(1, 2), (64, 7), (33, 3), (1000, 18)])
def test_categorical_sample_is_torch_multinomials_draw(rows, k):
    """The acting draw is torch.multinomial's, index for index, and leaves the generator where
    torch.multinomial leaves it; peaked and near-uniform rows, and rows with zero entries."""
    for seed in range(10):
        g = torch.Generator().manual_seed(100 + seed)
        probs = torch.softmax(torch.randn(rows, k, generator=g) * (0.1 + seed), dim=-1)
        probs[:, 0] = 0.0 if seed % 3 == 0 else probs[:, 0]  # never drawn
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        drawn = categorical_sample(probs, ours)
        assert torch.equal(drawn, torch.multinomial(probs, 1, generator=theirs).squeeze(-1))
        assert torch.equal(ours.get_state(), theirs.get_state())
        if seed % 3 == 0:
            assert bool((drawn != 0).all())
    for space in (Discrete(7), MultiDiscrete([2, 5, 3])):  # the distributions draw the same
        dist = make_action_dist(space)
        params = torch.randn(64, dist.param_size, generator=torch.Generator().manual_seed(3))
        a = dist.sample(params, torch.Generator().manual_seed(4), greedy=False)
        if isinstance(space, Discrete):
            b = torch.multinomial(
                torch.softmax(params, -1), 1, generator=torch.Generator().manual_seed(4)
            )
            assert torch.equal(a, b.squeeze(-1))
        else:
            probs = torch.softmax(dist._padded(params), -1).reshape(-1, dist.width)
            b = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(4))
            assert torch.equal(a, b.reshape(64, 3))


def test_gaussian_log_prob_uses_the_unclipped_sample_and_the_env_gets_it_clipped():
    space = Box(-1.0, 2.0, (2,), np.float32)
    dist = make_action_dist(space)
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor([0.5, -1.0]))
    mean = torch.tensor([[1.9, -0.5], [0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    a = dist.sample(mean[:1].expand(5000, 2), g, greedy=False)
    std = torch.tensor([0.5, -1.0]).exp()
    assert (a[:, 0] > 2.0).any() and (a[:, 0] < -1.0).any()  # samples leave the bounds...
    clipped = dist.env_action(a)
    assert bool((clipped >= -1).all() and (clipped <= 2).all())  # ...the env's actions do not
    torch.testing.assert_close(
        clipped, a.clamp(torch.tensor([-1.0, -1.0]), torch.tensor([2.0, 2.0]))
    )
    sample = torch.stack([a[0], a[1] - mean[0]])  # two samples, scored under both means
    by_hand = (-0.5 * ((sample - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    torch.testing.assert_close(dist.dist(mean).log_prob(sample), by_hand)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + std.log()).sum()
    torch.testing.assert_close(dist.dist(mean).entropy(), entropy.expand(2))
    torch.testing.assert_close(a.std(0), std, rtol=0.05, atol=0)
    torch.testing.assert_close(a.mean(0), mean[0], rtol=0, atol=0.05)
    assert torch.equal(dist.sample(mean, None, greedy=True), mean)
    assert torch.equal(dist.features(a[:3]), clipped[:3])
    assert dist.log_std.requires_grad  # learned, state-independent


def test_bernoulli_log_prob_and_entropy_by_hand():
    dist = make_action_dist(MultiBinary(3))
    logits = torch.randn(6, 3)
    a = dist.sample(logits, torch.Generator().manual_seed(0), greedy=False)
    p = torch.sigmoid(logits)
    logp = (a * p.log() + (1 - a) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(dist.dist(logits).log_prob(a), logp)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(dist.dist(logits).entropy(), entropy)
    assert torch.equal(dist.sample(logits, None, True), (logits > 0).float())


def test_unsupported_action_space_names_the_supported_ones():
    with pytest.raises(UnsupportedSpace, match="Box, Discrete, MultiDiscrete and MultiBinary"):
        make_action_dist(gym.spaces.Tuple((Discrete(2), Discrete(3))))


# ---------------------------------------------------------------- gymnasium envs, batched
class _AnySpaces(gym.Env):
    """An env with a nested observation of every leaf kind and a chosen action space; ends
    by a time limit of 3 steps and reports success = whether the last action was 'high'."""

    def __init__(self, action_space: gym.Space):
        self.observation_space = gym.spaces.Dict(
            {
                "pos": Box(-1, 1, (2,), np.float32),
                "rest": gym.spaces.Tuple((Discrete(3), MultiDiscrete([2, 2]), MultiBinary(2))),
            }
        )
        self.action_space = action_space

    def _obs(self):
        return {
            "pos": np.array([self.t / 3, -self.t / 3], np.float32),
            "rest": (self.t % 3, np.array([self.t % 2, 1]), np.array([1, self.t % 2], np.int8)),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        end = self.t >= 3
        info = {"is_success": bool(np.asarray(action).max() > 0)} if end else {}
        return self._obs(), float(self.t), False, end, info


@pytest.mark.parametrize(
    "action_space",
    [Discrete(3, start=1), MultiDiscrete([2, 3]), Box(-1, 1, (2,), np.float32), MultiBinary(2)],
)
def test_gym_vector_env_of_any_space_batches_obs_final_obs_and_success(action_space):
    env = make_vec(lambda: _AnySpaces(action_space), 2, seed=0)
    obs, info = env.reset()
    assert set(obs) == {"pos", "rest.0", "rest.1", "rest.2"}
    assert obs["rest.1"].shape == (2, 2) and obs["rest.0"].dtype == torch.int64
    dist = make_action_dist(env.single_action_space)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        a = dist.env_action(dist.sample(torch.zeros(2, dist.param_size), g, False))
        obs, _, term, trunc, info = env.step(a)
    assert trunc.all() and not term.any() and info["is_first"].all()
    # the final observation is the one before the reset, the returned one the reset's
    assert torch.allclose(info["final_obs"]["pos"], torch.tensor([[1.0, -1.0]] * 2))
    assert torch.equal(obs["pos"], torch.zeros(2, 2))
    assert info["final_obs"]["rest.0"].tolist() == [0, 0] and obs["rest.0"].tolist() == [0, 0]
    assert info["final_obs"]["rest.2"].tolist() == [[1, 1], [1, 1]]
    assert info["episode"]["return"].tolist() == [6.0, 6.0] and info["episode"][
        "success"
    ].shape == (2,)
    env.close()


def test_gym_vector_env_without_success_reports_nan_and_refuses_bad_actions():
    env = make_vec("CartPole-v1", 2, seed=0)
    env.reset()
    done = False
    while not done:
        _, _, term, trunc, info = env.step(torch.tensor([0, 0]))
        done = bool((term | trunc).any())
    assert torch.isnan(info["episode"]["success"]).all()
    with pytest.raises(ValueError, match=r"valid actions are 0\.\.1"):
        env.step(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.tensor([0, 1, 1]))
    env.close()


def test_tensor_tasks_hand_over_the_final_observation_of_a_time_limit():
    env = make_vec("rlgate/TMaze-v0", 4, seed=0, length=2, max_steps=3)
    manual = make_vec("rlgate/TMaze-v0", 4, seed=0, length=2, max_steps=3)
    manual.autoreset = False
    env.reset(), manual.reset()
    left = torch.full((4,), 3)  # walk into the wall behind the start: never terminates
    for _ in range(3):
        _, _, term, trunc, info = env.step(left)
        last, *_ = manual.step(left)
    assert trunc.all() and not term.any()
    assert torch.equal(info["final_obs"]["image"], last["image"])
    assert torch.equal(env.state["pos"], manual._start.expand(4, 2))  # and then reset


def test_async_vector_env_hands_over_the_same_final_observations_as_sync():
    finals = {}
    for mode in ("sync", "async"):
        env = make_vec("CartPole-v1", 3, seed=0, vectorization=mode, max_episode_steps=5)
        env.reset()
        for _ in range(5):
            obs, _, _, trunc, info = env.step(torch.zeros(3, dtype=torch.long))
        assert trunc.all()
        finals[mode] = (info["final_obs"]["obs"], obs["obs"])
        env.close()
    assert torch.equal(finals["sync"][0], finals["async"][0])
    assert torch.equal(finals["sync"][1], finals["async"][1])
    assert not torch.equal(finals["sync"][0], finals["sync"][1])  # final obs != reset obs
