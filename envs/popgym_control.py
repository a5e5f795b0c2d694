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

The clone draws an episode's initial state from the env's pool of uniforms and each
observation's noise, as the observation is made, from its pool of noise (float32 draws of
N(0, sigma); popgym draws float64 normals and casts them to float32), both in copy order
(``TensorEnv._pool``); ``load_popgym`` replays popgym's draws from the seed its episode was
reset with. On the CPU a CartPole step is one native call (``native.cartpole_run``: the step,
its bookkeeping, the resets and the observations).
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
        self.length, self.noise = length, float(noise)
        # an initial state's uniforms; an observation's noise (a step's, and a new episode's)
        self.pools = {"uniform": self.STATE, **({"noise": 2 * self.OBS} if noise else {})}
        super().__init__(num_envs, device, seed, autoreset)
        self.native = native.native_for(self.device)
        n, dev = self.num_envs, self.device
        self.state["physics"] = torch.zeros(n, self.STATE, dtype=torch.float64, device=dev)
        self.state["t"] = torch.zeros(n, dtype=torch.long, device=dev)
        self.state["success"] = torch.full((n,), float("nan"), device=dev)  # popgym has none
        if self.noise:  # the noise of each copy's current observation
            self.state["obs_noise"] = torch.zeros(n, self.OBS, device=dev)
        self._bounds: Tensor | None = None

    @property
    def max_episode_steps(self) -> int:
        return self.length

    def _initial(self, u: Tensor) -> Tensor:  # pragma: no cover - abstract
        """An episode's initial physical state [k, STATE] from uniforms u [k, STATE]."""
        raise NotImplementedError

    def _reset(self, mask: Tensor) -> None:
        idx = mask.nonzero().squeeze(1)
        st, k = self.state, idx.numel()
        st["physics"][idx] = self._initial(self._take("uniform", k * self.STATE).view(k, -1))
        st["t"][idx] = 0
        if self.noise:
            st["obs_noise"][idx] = self._take("noise", k * self.OBS).view(k, self.OBS)

    def _fill_pool(self, name: str, pool: Tensor) -> None:
        if name == "noise":  # popgym's N(0, sigma), in float32 (popgym: float64, then cast)
            pool.normal_(0.0, self.noise, generator=self.generator)
        else:
            super()._fill_pool(name, pool)

    def _next_noise(self) -> None:
        """Each copy's next observation's noise (the PyTorch path's step)."""
        if self.noise:
            n = self.num_envs
            self.state["obs_noise"].copy_(self._take("noise", n * self.OBS).view(n, self.OBS))

    def load_popgym(self, index: int, ref, seed: int) -> None:
        """Copy the episode popgym's ``ref`` was just reset into with ``seed``: its initial
        state, and the noise its generator draws for each observation (a generator made from
        the same seed as gymnasium makes it, drawing in popgym's order): the first
        observation's, and the rest as the next draws of the env's noise pool, which every
        copy draws from (a noisy env replays popgym with one copy)."""
        from gymnasium.utils import seeding

        rng = seeding.np_random(seed)[0]
        physics = self._popgym_initial(rng)
        st = self.state
        st["physics"][index] = torch.as_tensor(physics, device=self.device)
        st["t"][index] = 0
        if self.noise:
            if self.num_envs != 1:
                raise ValueError("load_popgym of a noisy task takes an env of one copy")
            sigma = np.full(self.OBS, self.noise)
            draws = [rng.normal(0, sigma).astype(np.float32) for _ in range(self.length + 1)]
            draws = torch.as_tensor(np.stack(draws), device=self.device)
            st["obs_noise"][index] = draws[0]
            # room for the episode's draws, and for what the step start asks left after them
            pool, at = self._pool("noise", draws[1:].numel() + self.pools["noise"] + 2)
            pool[int(at) : int(at) + draws[1:].numel()] = draws[1:].reshape(-1)

    def _popgym_initial(self, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _bounds_of(self) -> tuple[Tensor, Tensor]:
        if self._bounds is None:
            space = self.single_observation_space
            self._bounds = (
                torch.as_tensor(space.low, device=self.device),
                torch.as_tensor(space.high, device=self.device),
            )
        return self._bounds

    def _noisy(self, obs: Tensor) -> Tensor:
        if not self.noise:
            return obs
        low, high = self._bounds_of()
        return torch.minimum(torch.maximum(obs + self.state["obs_noise"], low), high)

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
        self._packed_bounds: Tensor | None = None

    def _initial(self, u: Tensor) -> Tensor:
        return -0.05 + 0.1 * u

    def _popgym_initial(self, rng):
        return rng.uniform(low=-0.05, high=0.05, size=(4,))

    def step(self, actions: Tensor):
        """``TensorEnv.step``; on the native path one call (``cartpole_run``) steps every
        copy, keeps its books, resets the copies whose episode ended and observes."""
        if not self.native:
            return super().step(actions)
        bounds = None
        if self.noise:
            if self._packed_bounds is None:
                self._packed_bounds = torch.cat(self._bounds_of()).float().contiguous()
            bounds = self._packed_bounds
        return self._whole_step(
            actions, lambda a: native.cartpole_run(self, a, bounds), lambda obs: {"obs": obs}
        )

    def _observe(self) -> dict[str, Tensor]:
        st = self.state
        position = st["physics"][:, 0::2].float()  # [x, theta]
        if self.VIEW == (0, 2):
            return {"obs": self._noisy(position)}
        seen = st["physics"][:, self.VIEW[0] :: 2].float()
        return {"obs": self._noisy(torch.where((st["t"] == 0)[:, None], position, seen))}

    def _step(self, actions: Tensor):
        st = self.state
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
        self._next_noise()
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

    def _initial(self, u: Tensor) -> Tensor:
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
            stepped = native.pendulum_step(self, actions.contiguous(), -PENDULUM_LOW / 2)
            self._next_noise()
            return stepped
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
        self._next_noise()
        return reward, torch.zeros_like(st["t"], dtype=torch.bool), st["t"] >= self.length


class NoisyPositionOnlyPendulum(PositionOnlyPendulum):
    """popgym's NoisyPositionOnlyPendulum."""

    DIFFICULTIES = NoisyPositionOnlyCartPole.DIFFICULTIES

    def __init__(self, num_envs, device="cpu", seed=None, autoreset=True, noise: float = 0.1):
        super().__init__(num_envs, device, seed, autoreset, 200, noise)
