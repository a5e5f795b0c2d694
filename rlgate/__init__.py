"""rlgate: reinforcement learning with gated recurrent memory.

Subpackages: ``rlgate.cores`` (the gate family), ``rlgate.envs`` (memory environments),
``rlgate.agents`` (actor-critic agents). Nothing is imported eagerly.
"""

__version__ = "0.1.0"
