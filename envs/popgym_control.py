"""POPGym's partially observed control tasks on tensors: CartPole seen by its positions or its
velocities (optionally with noise) and Pendulum seen by its angle alone (optionally with noise),
every copy of a batch stepped in one call (the ``popgym`` package's, built on gymnasium's
CartPole-v1 and Pendulum-v1 dynamics, computed here in float64 as there).

- PositionOnlyCartPole: sees [x, theta]; pays 1/L a step (the pole's fall included: popgym
  maps gymnasium's reward of 1 to 1/L), ends where gymnasium's CartPole does, truncated after
  L steps (200, 400, 600).
- VelocityOnlyCartPole: sees [x_dot, theta_dot] (its first observation, as popgym's reset
  gives it, is [x, theta]).
- NoisyPositionOnlyCartPole: PositionOnlyCartPole's [x, theta] plus Gaussian noise (sigma 0.1,
  0.2, 0.3), clipped to the observation bounds; L = 200.
- PositionOnlyPendulum: sees [cos theta, sin theta]; pays (r + 8.1368) / 8.1368 / L for
  gymnasium's reward r (returns in [-1, 1]); truncated after L steps (200, 150, 100).
- NoisyPositionOnlyPendulum: with noise (sigma 0.1, 0.2, 0.3), clipped to [-1, 1]; L = 200.

The clone draws an episode's initial state and all its observation noise at the episode's start
(popgym draws float64 normals and casts them to float32; the clone draws float32 normals, six
times cheaper here), so that a copy's state determines its episode; ``load_popgym`` replays
popgym's draws from the seed its episode was reset with.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlgate.envs import native
from rlgate.envs.base import TensorEnv

# gymnasium's CartPole-v1
GRAVITY, MASSCART, MASSPOLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASSPOLE + MASSCART
POLEMASS_LENGTH = MASSPOLE * HALF_LENGTH
THETA_LIMIT, X_LIMIT = 12 * 2 * math.pi / 360, 2.4
# gymnasium's Pendulum-v1
MAX_SPEED, MAX_TORQUE, DT, G, M, L = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0
#: popgym's bounds of Pendulum's reward, for its rescaling to [-1, 1] over an episode
PENDULUM_LOW = -16.2736044


class _Control(TensorEnv):
    """What the control tasks share: the physical state, the step count, the noise."""

    DIFFICULTIES: dict[str, dict] = {}  # noqa: RUF012 (read-only by convention)
    STATE = 4  # entries of the physical state
    OBS = 2  # entries of the observation

    def __init__(self, num_envs, device, seed, autoreset, length: int, noise: float):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        super().__init__(num_envs, device, seed, autoreset)
        self.native = native.native_for(self.device)  # CartPole's steps, the bookkeeping
        self.length, self.noise = length, float(noise)
        n, dev = self.num_envs, self.device
        self.state["physics"] = torch.zeros(n, self.STATE, dtype=torch.float64, device=dev)
        self.state["t"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["success"] = torch.full((n,), float("nan"), device=dev)  # popgym has none
        if self.noise:  # the episode's noise, one row per observation
            self.state["noise"] = torch.zeros(n, length + 1, self.OBS, device=dev)
        self._bounds: tuple[Tensor, Tensor] | None = None

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def _initial(self, k: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        st, k = self.state, idx.numel()
        st["physics"][idx] = self._initial(k)
        st["t"][idx] = 0
        if self.noise:
            normal = torch.randn(
                (k, self.length + 1, self.OBS), generator=self.generator, device=self.device
            )
            st["noise"][idx] = self.noise * normal

    def load_popgym(self, index: int, ref, seed: int) -> None:
        """Copy the episode popgym's ``ref`` was just reset into with ``seed``: its initial
        state, and the noise its generator draws for each observation (a generator made from
        the same seed as gymnasium makes it, drawing in popgym's order)."""
        from gymnasium.utils import seeding

        rng = seeding.np_random(seed)[0]
        physics = self._popgym_initial(rng)
        st = self.state
        st["physics"][index] = torch.as_tensor(physics, device=self.device)
        st["t"][index] = 0
        if self.noise:
            sigma = np.full(self.OBS, self.noise)
            draws = [rng.normal(0, sigma).astype(np.float32) for _ in range(self.length + 1)]
            st["noise"][index] = torch.as_tensor(np.stack(draws), device=self.device)

    def _popgym_initial(self, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _noisy(self, obs: Tensor) -> Tensor:
        if not self.noise:
            return obs
        if self._bounds is None:
            space = self.single_observation_space
            self._bounds = (
                torch.as_tensor(space.low, device=self.device),
                torch.as_tensor(space.high, device=self.device),
            )
        low, high = self._bounds
        t = self.state["t"].clamp(max=self.length)[:, None, None].expand(-1, 1, self.OBS)
        noise = self.state["noise"].gather(1, t).squeeze(1)
        return torch.minimum(torch.maximum(obs + noise, low), high)

    def _render(self, index: int) -> np.ndarray:
        """The state as a bar chart, one 8-pixel column per entry (for videos)."""
        values = self.state["physics"][index].cpu().numpy()
        heights = (np.tanh(values) * 16 + 16).astype(int)
        out = np.full((33, 8 * values.size, 3), 255, np.uint8)
        for j, h in enumerate(heights):
            out[32 - h :, 8 * j : 8 * j + 7] = (30, 30, 200)
        return out


class _CartPole(_Control):
    """gymnasium's CartPole dynamics (Euler), seen through ``_view``."""

    VIEW = (0, 2)  # the state entries observed after a step

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        length: int = 200,
        noise: float = 0.0,
    ):
        super().__init__(num_envs, device, seed, autoreset, length, noise)
        self.single_action_space = gym.spaces.Discrete(2)
        self.native_checks_actions = self.native  # cartpole_step checks them

    def _initial(self, k: int) -> Tensor:
        u = torch.rand((k, 4), generator=self.generator, device=self.device, dtype=torch.float64)
        return -0.05 + 0.1 * u

    def _popgym_initial(self, rng):
        return rng.uniform(low=-0.05, high=0.05, size=(4,))

    def _observe(self) -> dict[str, Tensor]:
        if self.native:
            return {"obs": self._noisy(native.cartpole_observe(self, self.VIEW[0]))}
        st = self.state
        position = st["physics"][:, 0::2].float()  # [x, theta]
        if self.VIEW == (0, 2):
            return {"obs": self._noisy(position)}
        seen = st["physics"][:, self.VIEW[0] :: 2].float()
        return {"obs": self._noisy(torch.where((st["t"] == 0)[:, None], position, seen))}

    def _step(self, actions: Tensor):
        st = self.state
        if self.native:
            return native.cartpole_step(self, actions)
        x, x_dot, theta, theta_dot = st["physics"].unbind(1)
        force = actions.double() * (2 * FORCE) - FORCE  # action 1 pushes right, 0 left
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + POLEMASS_LENGTH * theta_dot.square() * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (
            HALF_LENGTH * (4.0 / 3.0 - MASSPOLE * cos.square() / TOTAL_MASS)
        )
        x_acc = temp - POLEMASS_LENGTH * theta_acc * cos / TOTAL_MASS
        x, x_dot = x + TAU * x_dot, x_dot + TAU * x_acc
        theta, theta_dot = theta + TAU * theta_dot, theta_dot + TAU * theta_acc
        st["physics"] = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        terminated = (x.abs() > X_LIMIT) | (theta.abs() > THETA_LIMIT)
        st["t"] += 1
        reward = torch.full((self.num_envs,), 1.0 / self.length, device=self.device)
        return reward, terminated, st["t"] >= self.length


class PositionOnlyCartPole(_CartPole):
    """popgym's PositionOnlyCartPole."""

    DIFFICULTIES = {"Easy": {"length": 200}, "Medium": {"length": 400}, "Hard": {"length": 600}}  # noqa: RUF012

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, length: int = 200):
        super().__init__(num_envs, device, seed, autoreset, length)
        high = np.array([X_LIMIT * 2, THETA_LIMIT * 2], dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-high, high, dtype=np.float32)


class VelocityOnlyCartPole(_CartPole):
    """popgym's VelocityOnlyCartPole."""

    DIFFICULTIES = PositionOnlyCartPole.DIFFICULTIES
    VIEW = (1, 3)

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, length: int = 200):
        super().__init__(num_envs, device, seed, autoreset, length)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class NoisyPositionOnlyCartPole(_CartPole):
    """popgym's NoisyPositionOnlyCartPole."""

    DIFFICULTIES = {"Easy": {"noise": 0.1}, "Medium": {"noise": 0.2}, "Hard": {"noise": 0.3}}  # noqa: RUF012

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, noise: float = 0.1):
        super().__init__(num_envs, device, seed, autoreset, 200, noise)
        high = np.array([X_LIMIT * 2, THETA_LIMIT * 2], dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-high, high, dtype=np.float32)


class PositionOnlyPendulum(_Control):
    """popgym's PositionOnlyPendulum."""

    DIFFICULTIES = {"Easy": {"length": 200}, "Medium": {"length": 150}, "Hard": {"length": 100}}  # noqa: RUF012
    STATE = 2

    def __init__(
        self,
        num_envs,
        device="cpu",
        seed=None,
        autoreset=True,
        length: int = 200,
        noise: float = 0.0,
    ):
        super().__init__(num_envs, device, seed, autoreset, length, noise)
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Box(-MAX_TORQUE, MAX_TORQUE, (1,), np.float32)

    def _initial(self, k: int) -> Tensor:
        u = torch.rand((k, 2), generator=self.generator, device=self.device, dtype=torch.float64)
        high = torch.tensor([math.pi, 1.0], dtype=torch.float64, device=self.device)
        return (2 * u - 1) * high

    def _popgym_initial(self, rng):
        high = np.array([np.pi, 1.0])
        return rng.uniform(low=-high, high=high)

    def _observe(self) -> dict[str, Tensor]:
        theta = self.state["physics"][:, 0]
        return {"obs": self._noisy(torch.stack([torch.cos(theta), torch.sin(theta)], 1).float())}

    def _step(self, actions: Tensor):
        if self.native:
            return native.pendulum_step(self, actions.contiguous(), -PENDULUM_LOW / 2)
        st = self.state
        theta, theta_dot = st["physics"].unbind(1)
        u = actions[:, 0].clamp(-MAX_TORQUE, MAX_TORQUE)  # float32, as gymnasium's
        angle = torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
        costs = angle.square() + 0.1 * theta_dot.square() + (0.001 * u.square()).double()
        push = (3.0 / (M * L**2) * u).double()
        new_dot = theta_dot + (3 * G / (2 * L) * torch.sin(theta) + push) * DT
        new_dot = new_dot.clamp(-MAX_SPEED, MAX_SPEED)
        st["physics"] = torch.stack([theta + new_dot * DT, new_dot], dim=1)
        half = -PENDULUM_LOW / 2
        reward = ((-costs + half) / half / self.length).float()
        st["t"] += 1
        return reward, torch.zeros_like(st["t"], dtype=torch.bool), st["t"] >= self.length


class NoisyPositionOnlyPendulum(PositionOnlyPendulum):
    """popgym's NoisyPositionOnlyPendulum."""

    DIFFICULTIES = NoisyPositionOnlyCartPole.DIFFICULTIES

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, noise: float = 0.1):
        super().__init__(num_envs, device, seed, autoreset, 200, noise)
