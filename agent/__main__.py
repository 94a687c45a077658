"""Allows `python -m agent`."""

from linelight.agent.cli import main

raise SystemExit(main())
