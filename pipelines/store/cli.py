"""``python -m pipelines db-upgrade``."""

from __future__ import annotations

import argparse

from pipelines.settings import get_settings
from pipelines.store.db import upgrade


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default="head", help="Alembic revision (default: head)")


def run_cli(args: argparse.Namespace) -> int:
    url = get_settings().database_url
    upgrade(url, args.revision)
    print(f"chat store at {url} is at revision {args.revision}")
    return 0
