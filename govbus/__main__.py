"""``python -m govbus``: the ``govbus`` command, for environments without the console script."""

from govbus._cli import main

raise SystemExit(main())
