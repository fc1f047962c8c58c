"""``python -m pipelines STEP``: one sub-command per pipeline step."""

from pipelines.cli import main

raise SystemExit(main())
