"""Run configuration: frozen dataclasses, parsed once by tyro, validated on construction.

``rlgate train --help`` is generated from the field docstrings below.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from rlgate.cores import BACKENDS, CORES
from rlgate.recipes import RECIPES

#: a run folder's name: one plain path component inside --logdir
RUN_NAME = re.compile(r"[A-Za-z0-9_=+][A-Za-z0-9._=+-]*")
#: the ``env`` of a run that trained on an env given in Python (``rlgate.fit(cfg, env=...)``)
CUSTOM_ENV = "custom"
#: --core choices, from the cores registry (tyro lists them in --help and in errors)
CoreName = Literal[tuple(CORES)]  # type: ignore[valid-type]


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_coefs(section: str, cfg: object, names: tuple[str, ...]) -> None:
    """Loss coefficients must be finite and >= 0 (``section``: "ppo" or "impala")."""
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            _fail(f"{section}.{name.replace('_', '-')} must be finite and >= 0, got {value}")


@dataclass(frozen=True)
class PPOConfig:
    """Proximal policy optimisation (Schulman et al. 2017) with recurrent cores."""

    epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Minibatches per epoch; each holds whole sequences (split across envs)."""
    clip_coef: float = 0.2
    """Clipping range of the probability ratio."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    bptt: int | None = None
    """Truncated BPTT length (divides unroll_length); default: the whole unroll."""
    recompute_states: bool = False
    """Recompute the BPTT chunks' start states with the current parameters before each epoch."""

    def __post_init__(self):
        if self.epochs < 1 or self.num_minibatches < 1:
            _fail("ppo.epochs and ppo.num_minibatches must be >= 1")
        if not 0 < self.clip_coef < 1:
            _fail(f"ppo.clip_coef must be in (0, 1), got {self.clip_coef}")
        if not 0 <= self.gae_lambda <= 1:
            _fail(f"ppo.gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.bptt is not None and self.bptt < 1:
            _fail(f"ppo.bptt must be >= 1, got {self.bptt}")
        _check_coefs("ppo", self, ("ent_coef", "vf_coef"))

    def check_run(self, run: TrainConfig) -> None:
        """What this section asks of the run's sizes: BPTT chunks and minibatches fit."""
        bptt = self.bptt or run.unroll_length
        if run.unroll_length % bptt:
            _fail(f"ppo.bptt={bptt} must divide unroll-length={run.unroll_length}")
        sequences = (run.unroll_length // bptt) * run.num_envs
        if sequences % self.num_minibatches:
            _fail(
                f"ppo.num-minibatches={self.num_minibatches} must divide the "
                f"{sequences} sequences of a rollout ((unroll-length / bptt) * num-envs)"
            )

    def learner_envs(self, run: TrainConfig) -> int:
        """Envs in one update's batch (per process)."""
        return run.num_envs


@dataclass(frozen=True)
class IMPALAConfig:
    """IMPALA with V-trace (Espeholt et al. 2018)."""

    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    baseline_coef: float = 0.5
    """Value (baseline) loss coefficient."""
    clip_rho: float = 1.0
    """V-trace rho-bar (clipping of the importance weights in the targets)."""
    clip_pg_rho: float = 1.0
    """rho-bar of the policy-gradient advantages."""
    clip_c: float = 1.0
    """V-trace c-bar (trace cutting)."""
    num_actors: int = 0
    """Actor processes; 0 runs the actors in the learner's process (synchronous mode)."""
    envs_per_actor: int = 8
    """Envs stepped by each actor process."""
    queue_size: int = 4
    """Unroll buffers in shared memory per actor (bounds the policy lag)."""

    def __post_init__(self):
        for name in ("clip_rho", "clip_pg_rho", "clip_c"):
            if getattr(self, name) <= 0:
                _fail(f"impala.{name} must be > 0")
        _check_coefs("impala", self, ("ent_coef", "baseline_coef"))
        if self.num_actors < 0 or self.envs_per_actor < 1 or self.queue_size < 2:
            _fail("impala.num_actors >= 0, envs_per_actor >= 1 and queue_size >= 2 required")

    def check_run(self, run: TrainConfig) -> None:
        """Nothing: V-trace takes any unroll."""

    def learner_envs(self, run: TrainConfig) -> int:
        """Envs in one update's batch (per process): with actor processes, one actor's unroll
        of envs_per_actor envs at a time."""
        return self.envs_per_actor if self.num_actors > 0 else run.num_envs


#: agent name -> its config section, also the name of the TrainConfig field that holds it
#: (the learners: ``rlgate.agents.registry``)
AGENT_SECTIONS = {"ppo": PPOConfig, "impala": IMPALAConfig}
AGENTS = tuple(AGENT_SECTIONS)
#: --agent choices (tyro lists them in --help and in errors)
AgentName = Literal[AGENTS]  # type: ignore[valid-type]


#: metadata of the TrainConfig fields that define the model and the data's layout: a
#: checkpoint resumes only with equal ones (``fixed_fields``)
FIXED = MappingProxyType({"fixed_on_resume": True})


@dataclass(frozen=True)
class TrainConfig:
    """Train an actor-critic with a recurrent core on a memory task."""

    agent: AgentName = field(default="ppo", metadata=FIXED)
    """The learning algorithm."""
    core: CoreName = field(default="ur-lstm", metadata=FIXED)
    """The recurrent core, or mlp for the memoryless control (see `rlgate cores`)."""
    env: str = field(default="rlgate/TMaze-v0", metadata=FIXED)
    """Environment: an rlgate task (rlgate/PassiveMatch-v0, rlgate/ActiveMatch-v0,
    rlgate/TMaze-v0, rlgate/MemoryS7-v0 .. S17), any registered gymnasium id (CartPole-v1,
    MiniGrid-MemoryS7-v0, popgym-RepeatPreviousEasy-v0 with the popgym extra, ...), or
    module:EnvId (imports module first, which registers your own env). Observations: Box
    (vectors and images), Discrete, MultiDiscrete, MultiBinary, Dict and Tuple of these;
    actions: Discrete, MultiDiscrete, Box, MultiBinary."""
    env_option: tuple[str, ...] = ()
    """Env options as KEY=VALUE (e.g. length=6 num_colours=3): an rlgate task's options, or
    keyword arguments of gymnasium.make for other ids."""
    num_envs: int = field(default=32, metadata=FIXED)
    """Environments stepped together (per process: torchrun ranks each step this many)."""
    total_timesteps: int = 300_000
    """Environment steps to train for."""
    unroll_length: int = field(default=32, metadata=FIXED)
    """Steps per env per rollout (T)."""
    hidden_size: int = field(default=64, metadata=FIXED)
    """Core size H (the same for every core in a comparison)."""
    encoder_size: int = field(default=64, metadata=FIXED)
    """Feature size fed to the core."""
    head_size: int = field(default=0, metadata=FIXED)
    """Policy/value heads: 0 = linear over the core output; N = one tanh layer of N units over
    [core output, encoder features]."""
    view_gate: bool = field(default=False, metadata=FIXED)
    """Gated-attention heads (needs head-size > 0): the core output gates the view's channels
    (one sigmoid per channel) and the heads see [core output, gated view] instead of [core
    output, encoder features], so that "where is what I remember" is a gate and a read of the
    gated cells instead of a conjunction to discover."""
    view_pool: bool = field(default=False, metadata=FIXED)
    """Give the core the view's channel counts too (how many cells of each kind are in view,
    through a map of their own): what is in view wherever it stands, so that a cue seen at any
    cell of the view is one input to remember, not a different one per cell."""
    seen_loss: float = field(default=0.0, metadata=FIXED)
    """Weight of an auxiliary loss (0 = none): a linear head over the core output predicts,
    for each channel of the grid view (floor, wall, apple, each colour, ...), whether it has
    been in view at some step of the episode so far (binary cross-entropy). A learning signal
    for the memory that does not go through the policy: a colour seen once and then out of
    view can only be predicted from memory. Needs a grid view; adds a head to the model."""
    policy_init_gain: float = 0.01
    """Orthogonal-init gain of the policy's last layer: 0.01 starts near a uniform policy but
    scales down every gradient the policy sends into the heads and core; 1 lets the policy
    shape them from the start (the Match tasks learn much faster with it and --view-gate)."""
    backend: str = "auto"
    """Core backend: auto, reference, fused (fastest fused path), native, triton or pytorch."""
    chrono_t_max: float | None = None
    """T_max of the chrono init (c-lstm); default: the env's episode length when known."""
    chunk_size: int = 1
    """ON-LSTM chunk size (om-lstm): its master gates are hidden-size / chunk-size wide and shared
    by each chunk of units; must divide hidden-size."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0."""
    gamma: float = 0.99
    """Discount."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this for learning (values, returns, advantages); logged returns
    and the policy's previous-reward input stay unscaled."""
    novelty_bonus: float = 0.0
    """Exploration bonus (in the env's reward units, before reward-scale) for each step that
    reaches an observation not seen before in its episode: an episodic count-based bonus that
    pays for looking around (exact repeats only: meant for discrete views such as grids).
    0 = none. Logged returns, episode statistics and the previous-reward input keep the env's
    reward."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    seed: int = 1
    """Seed of the envs, the model and the action sampling."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (cuda when available)."""
    logdir: str = "runs"
    """Parent folder of run folders."""
    run_name: str | None = None
    """Run folder name; default: {env}__{agent}__{core}__s{seed}__{time}."""
    resume: str | None = None
    """A run folder (or its checkpoint file) to continue."""
    checkpoint_interval: int = 25
    """Updates between checkpoints (one is also written at the end and on Ctrl-C)."""
    gate_log_interval: int = 10
    """Updates between gate histograms in TensorBoard."""
    video_interval: int = 0
    """Updates between videos of one episode in TensorBoard (videos/episode, an animated GIF
    played with the current policy in an env of its own); 0 = none. Needs an env that renders:
    the rlgate tasks, or a gymnasium id with an rgb_array render mode."""
    progress: bool = True
    """Show a progress bar."""
    dist_timeout: float = 300.0
    """Seconds a rank of a torchrun job waits for the others in a collective before the job
    ends with an error (a crashed rank never hangs the rest)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    impala: IMPALAConfig = field(default_factory=IMPALAConfig)

    def __post_init__(self):
        if self.agent not in AGENTS:
            _fail(f"unknown agent {self.agent!r}; valid agents: {', '.join(AGENTS)}")
        if self.core not in CORES:
            _fail(f"unknown core {self.core!r}; valid cores: {', '.join(CORES)}")
        if self.backend not in BACKENDS:
            _fail(f"unknown backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}")
        for name in (
            "num_envs",
            "total_timesteps",
            "unroll_length",
            "hidden_size",
            "encoder_size",
            "checkpoint_interval",
            "gate_log_interval",
        ):
            if getattr(self, name) < 1:
                _fail(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.video_interval < 0:
            _fail(f"video-interval must be >= 0 (0 = no videos), got {self.video_interval}")
        if self.chunk_size < 1 or self.hidden_size % self.chunk_size:
            _fail(f"chunk-size must divide hidden-size={self.hidden_size}, got {self.chunk_size}")
        if self.head_size < 0:
            _fail(f"head-size must be >= 0, got {self.head_size}")
        if not (math.isfinite(self.policy_init_gain) and self.policy_init_gain > 0):
            _fail(f"policy-init-gain must be finite and > 0, got {self.policy_init_gain}")
        if self.view_gate and not self.head_size:
            _fail("view-gate needs heads with a hidden layer: pass --head-size N (N > 0)")
        if self.run_name is not None and not RUN_NAME.fullmatch(self.run_name):
            _fail(
                f"run-name must be a plain folder name (letters, digits and . _ = + -, not "
                f"starting with . or -), got {self.run_name!r}"
            )
        if self.dist_timeout <= 0:
            _fail(f"dist-timeout must be > 0, got {self.dist_timeout}")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            _fail(f"reward-scale must be finite and > 0, got {self.reward_scale}")
        if not (math.isfinite(self.novelty_bonus) and self.novelty_bonus >= 0):
            _fail(f"novelty-bonus must be finite and >= 0 (0 = none), got {self.novelty_bonus}")
        if not (math.isfinite(self.seen_loss) and self.seen_loss >= 0):
            _fail(f"seen-loss must be finite and >= 0 (0 = none), got {self.seen_loss}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            _fail(f"learning-rate must be finite and > 0, got {self.learning_rate}")
        if not 0 < self.gamma <= 1:
            _fail(f"gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            _fail(f"max-grad-norm must be finite and > 0, got {self.max_grad_norm}")
        if self.chrono_t_max is not None and not (
            math.isfinite(self.chrono_t_max) and self.chrono_t_max > 2
        ):
            _fail(f"chrono-t-max must be finite and > 2, got {self.chrono_t_max}")
        # a section's flags only mean something to its agent: refuse them elsewhere
        for other, section_cls in AGENT_SECTIONS.items():
            section, default = getattr(self, other), section_cls()
            if other != self.agent and section != default:
                changed = [
                    f"--{other}.{f.name.replace('_', '-')}"
                    for f in dataclasses.fields(default)
                    if getattr(section, f.name) != getattr(default, f.name)
                ]
                _fail(
                    f"{', '.join(changed)}: only for --agent {other} "
                    f"(this run is --agent {self.agent})"
                )
        _ = self.env_options  # parses, raising on malformed KEY=VALUE
        self.section.check_run(self)

    @property
    def section(self) -> PPOConfig | IMPALAConfig:
        """The options of this run's agent (``ppo`` or ``impala``)."""
        return getattr(self, self.agent)

    @property
    def env_options(self) -> dict[str, Any]:
        """The env's options, from the --env-option KEY=VALUE pairs."""
        options: dict[str, Any] = {}
        for item in self.env_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                _fail(f"--env-option expects KEY=VALUE, got {item!r}")
            if key in options:
                _fail(f"env option {key} is given twice")
            try:
                options[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                options[key] = value
        return options

    @property
    def batch_size(self) -> int:
        """Env steps per update (per process): IMPALA with actor processes learns from one
        actor's unroll of envs_per_actor envs at a time."""
        return self.section.learner_envs(self) * self.unroll_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def fixed_fields(cls) -> dict[str, Any]:
        """The fields a resume must keep (marked FIXED), with their defaults."""
        return {
            f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("fixed_on_resume")
        }

    @classmethod
    def from_recipe(cls, name: str, **changes: Any) -> TrainConfig:
        """The config of the named recipe (``rlgate.recipes.RECIPES``) with ``changes``
        applied: TrainConfig fields, an agent section as a dict merged field by field."""
        if name not in RECIPES:
            _fail(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
        return cls.from_dict(RECIPES[name].with_changes(changes))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        for name, section_cls in AGENT_SECTIONS.items():
            data[name] = section_cls(**data.get(name, {}))
        data["env_option"] = tuple(data.get("env_option", ()))
        delay = data.pop("delay", None)  # configs that had a top-level delay field
        if delay is not None:
            data["env_option"] += (f"delay={delay}",)
        return cls(**data)
