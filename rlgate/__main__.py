"""``python -m rlgate``: the same as the ``rlgate`` console script."""

from rlgate.cli import main

if __name__ == "__main__":
    main()
