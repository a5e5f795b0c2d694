"""rlgate: reinforcement learning with gated recurrent memory.

Subpackages: ``rlgate.cores`` (the gate family), ``rlgate.envs`` (memory environments),
``rlgate.agents`` (actor-critic agents). ``rlgate.fit(config, env=...)`` trains on an env of
your own. Nothing heavy is imported eagerly.
"""

__version__ = "0.1.0"


def fit(config=None, env=None):
    """Train an agent on ``env`` (see ``rlgate.api.fit``)."""
    from rlgate.api import fit as _fit

    return _fit(config, env)
