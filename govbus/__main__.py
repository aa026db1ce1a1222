"""``python -m govbus``: the ``govbus`` command, for environments without the console script."""

from govbus._cli import main

# Guarded: tools that import every module of the package (the error-tree test) must not run it.
if __name__ == "__main__":
    raise SystemExit(main())
