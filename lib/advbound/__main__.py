"""``python -m advbound``: see :mod:`advbound.cli`."""

from .cli import main

raise SystemExit(main())
