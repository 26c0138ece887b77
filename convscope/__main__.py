"""``python -m convscope``: the command line."""

from .cli import main

raise SystemExit(main())
