"""``python -m drclib.train``: runs :func:`drclib.train.cli.main`."""

from drclib.train.cli import main

raise SystemExit(main())
