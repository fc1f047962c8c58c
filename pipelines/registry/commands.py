"""Command line of promotion, rollback and the model-server supervisor.

``python -m pipelines promote``: promote the approved challenger if a valid approval waits
(exit 0 also when nothing waits; exit 1 when an approval was refused).
``python -m pipelines rollback --reason TEXT``: serve ``previous`` again.
``python -m pipelines serving-status [--json]``: the live routing, the aliases, what answers.
``python -m pipelines serving-ensure``: restart the champion's server if it is down.
``python -m pipelines serving-stop``: stop every model server started from this checkout.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipelines.params import load_params
from pipelines.registry.live import read_live
from pipelines.registry.promotion import (
    PromotionOutcome,
    ensure_serving,
    promote_approved,
    rollback,
)
from pipelines.registry.server import ping, recorded_servers, stop_all
from pipelines.settings import Settings, get_settings


def _print(outcome: PromotionOutcome) -> None:
    print(outcome.message)


def configure_promote(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: what to promote is decided by the approval tags


def run_promote(args: argparse.Namespace) -> int:
    settings = get_settings()
    outcome = promote_approved(settings, load_params(settings.params_path))
    _print(outcome)
    return 1 if outcome.action == "refused" else 0


def configure_rollback(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (kept as a version tag)")


def run_rollback(args: argparse.Namespace) -> int:
    settings = get_settings()
    _print(rollback(settings, load_params(settings.params_path), args.reason))
    return 0


def configure_ensure(parser: argparse.ArgumentParser) -> None:
    del parser


def run_ensure(args: argparse.Namespace) -> int:
    settings = get_settings()
    _print(ensure_serving(settings, load_params(settings.params_path)))
    return 0


def configure_stop(parser: argparse.ArgumentParser) -> None:
    del parser


def run_stop(args: argparse.Namespace) -> int:
    stopped = stop_all(get_settings())
    print(f"stopped {len(stopped)} model server(s)" + (f": {stopped}" if stopped else ""))
    return 0


def serving_status(settings: Settings) -> dict[str, Any]:
    """The live routing (and whether it answers), the aliases, and every recorded server."""
    from pipelines.tracking import client as tracking_client

    live = read_live(settings.live_file)
    aliases: dict[str, str] = {}
    try:
        registered = tracking_client(settings).get_registered_model(settings.registered_model_name)
        aliases = {k: str(v) for k, v in registered.aliases.items()}
    except Exception:  # no model yet, or the store is unreachable: status still answers
        aliases = {}
    return {
        "live": live.to_dict() if live else None,
        "live_answers": bool(live and live.running and ping(live.url)),
        "aliases": aliases,
        "servers": [{**h.to_dict(), "running": h.running} for h in recorded_servers(settings)],
    }


def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_status(args: argparse.Namespace) -> int:
    status = serving_status(get_settings())
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    live = status["live"]
    if live is None:
        print("no model is served (no live routing file)")
    else:
        state = "answers" if status["live_answers"] else "DOES NOT ANSWER"
        print(f"live: v{live['model_version']} at {live['url']} (pid {live['pid']}, {state})")
    print("aliases: " + (", ".join(f"{k}=v{v}" for k, v in status["aliases"].items()) or "none"))
    for server in status["servers"]:
        running = "running" if server["running"] else "gone"
        print(f"server pid {server['pid']}: v{server['version']} at {server['url']} ({running})")
    return 0
