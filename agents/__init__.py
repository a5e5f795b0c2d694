"""Actor-critic agents for rlgate, installed as ``rlgate.agents`` (the folder is ``agents/``).

Recurrent PPO and IMPALA land here with the agents issue; the package exists now so that the
layout and packaging are fixed.
"""

if __name__ != "rlgate.agents":  # the folder must not be importable as a generic "agents"
    raise ImportError(
        f"this folder is the package rlgate.agents, imported here as {__name__!r}: "
        "install rlgate from the checkout (pip install -e .) and import rlgate.agents"
    )
