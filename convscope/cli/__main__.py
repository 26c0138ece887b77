"""python -m convscope.cli: the command line (as python -m convscope)."""

from . import main

raise SystemExit(main())
