"""Approval of a challenger by an ML lead, tied to the evidence it was given on.

The ML lead approves in the MLflow UI by setting two version tags on the challenger's version
page: ``approval=approved`` and ``approved_by=<name>`` (``python -m pipelines approve`` does the
same from a shell). An approval counts only for the evidence it was given on; at promotion time:

* ``approved_by`` must be set (an unsigned approval is refused: ``unsigned``);
* the version must still hold the ``challenger`` alias (``not-challenger``);
* its gate must have blessed it (``gate-not-passed``);
* its ``compared_to`` tag must still name the current champion, or ``none`` when there is no
  champion (``stale-champion``): the side-by-side evidence was about that champion.

A refused approval is tagged ``approval=refused:<reason>`` (and ``refused_detail``) so that the
ML lead sees on the version page why nothing happened; approving again after a new evaluation is
the way forward.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipelines.settings import Settings, get_settings
from pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

APPROVAL = "approval"
APPROVED_BY = "approved_by"
APPROVED = "approved"
PENDING = "pending"
REFUSED_PREFIX = "refused:"
PROMOTED_AT = "promoted_at"


@dataclass(frozen=True)
class ApprovalCheck:
    version: str
    valid: bool
    reason: str = ""  # a refusal code (``stale-champion``), empty when valid
    detail: str = ""


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def waiting_approvals(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Versions tagged ``approval=approved`` that were never promoted, newest first."""
    found = [
        v
        for v in _versions(client, name)
        if v.tags.get(APPROVAL) == APPROVED and PROMOTED_AT not in v.tags
    ]
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def check_approval(client: MlflowClient, name: str, version: ModelVersion) -> ApprovalCheck:
    """Does this approval still hold for the evidence it was given on? (module docstring)"""
    number = str(version.version)
    tags = version.tags
    aliases = client.get_registered_model(name).aliases
    champion = aliases.get(CHAMPION_ALIAS)
    champion = str(champion) if champion is not None else "none"
    if not tags.get(APPROVED_BY, "").strip():
        return ApprovalCheck(number, False, "unsigned", "approval=approved without approved_by")
    if str(aliases.get(CHALLENGER_ALIAS)) != number:
        detail = f"challenger is now version {aliases.get(CHALLENGER_ALIAS, 'none')}"
        return ApprovalCheck(number, False, "not-challenger", detail)
    if tags.get("gate") != "blessed":
        return ApprovalCheck(number, False, "gate-not-passed", f"gate={tags.get('gate')}")
    compared_to = tags.get("compared_to", "")
    if compared_to != champion:
        detail = f"evaluated against champion {compared_to or '?'}, champion is now {champion}"
        return ApprovalCheck(number, False, "stale-champion", detail)
    return ApprovalCheck(number, True)


def refuse(client: MlflowClient, name: str, check: ApprovalCheck) -> None:
    client.set_model_version_tag(name, check.version, APPROVAL, REFUSED_PREFIX + check.reason)
    client.set_model_version_tag(name, check.version, "refused_detail", check.detail)
    log.warning(
        "approval of %s v%s refused: %s (%s)", name, check.version, check.reason, check.detail
    )


def approve(settings: Settings, version: str, approved_by: str) -> None:
    """What the ML lead does in the UI: tag the version approved, signed by ``approved_by``."""
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import client as tracking_client

    if not approved_by.strip():
        raise ValueError("an approval needs the approver's name (--by)")
    client = tracking_client(settings)
    name = settings.registered_model_name
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ValueError(f"{name} has no version {version!r}") from exc
    client.set_model_version_tag(name, version, APPROVED_BY, approved_by.strip())
    client.set_model_version_tag(
        name, version, "approved_at", datetime.now(UTC).isoformat(timespec="seconds")
    )
    client.set_model_version_tag(name, version, APPROVAL, APPROVED)  # last: the signal


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", required=True, help="model version to approve")
    parser.add_argument("--by", required=True, help="the approver's name (approved_by tag)")


def run_cli(args: argparse.Namespace) -> int:
    settings = get_settings()
    approve(settings, str(args.version), args.by)
    print(
        f"{settings.registered_model_name} v{args.version}: approval=approved, "
        f"approved_by={args.by.strip()} (promotion checks it against its evidence)"
    )
    return 0
