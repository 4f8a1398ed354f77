"""``python -m dspy_tiered_cache``: the same command-line tool as ``dspy-tiered-cache``."""

from dspy_tiered_cache.cli import main

raise SystemExit(main())
