"""``python -m drclib.judges``: runs :func:`drclib.judges.cli.main`."""

from drclib.judges.cli import main

raise SystemExit(main())
