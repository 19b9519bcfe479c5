"""``python -m orchestrator``: see :mod:`orchestrator.commands.cli`."""

from orchestrator.commands.cli import main

raise SystemExit(main())
