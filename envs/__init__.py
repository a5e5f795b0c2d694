"""Memory environments for rlgate, installed as ``rlgate.envs`` (the folder is ``envs/``).

The batched tensor tasks (PassiveMatch, ActiveMatch, TMaze, MemoryS*) land here with the
environments issue; the package exists now so that the layout and packaging are fixed.
"""

if __name__ != "rlgate.envs":  # the folder must not be importable as a generic "envs"
    raise ImportError(
        f"this folder is the package rlgate.envs, imported here as {__name__!r}: "
        "install rlgate from the checkout (pip install -e .) and import rlgate.envs"
    )
