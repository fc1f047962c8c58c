"""``python -m serving serve`` runs the service under uvicorn; ``create-key`` issues an API key."""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.settings import get_settings
from serving import auth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service (settings: EMOREG_SERVICE_*)")
    serve.add_argument("--host", help="default: settings service_host")
    serve.add_argument("--port", type=int, help="default: settings service_port")
    serve.add_argument("--workers", type=int, help="default: settings service_workers")
    create = commands.add_parser("create-key", help="append a key to the keys file and print it")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", choices=auth.SCOPES, required=True)
    key_digest = commands.add_parser(
        "key-digest", help="print a new key and its digest entry (for EMOREG_SERVICE_API_KEYS)"
    )
    key_digest.add_argument("--name", required=True)
    key_digest.add_argument("--scope", action="append", choices=auth.SCOPES, required=True)
    args = parser.parse_args(argv)

    if args.command == "key-digest":
        new = auth.new_key()
        entry = {"name": args.name, "sha256": auth.digest(new), "scopes": sorted(args.scope)}
        print(json.dumps({"key": new, "entry": entry}))
        return 0
    settings = get_settings()
    if args.command == "create-key":
        try:
            print(auth.create_key(settings.service_api_keys_file, args.name, args.scope))
        except auth.KeysFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    import uvicorn

    from serving.logs import configure_logging

    configure_logging()
    uvicorn.run(
        "serving.asgi:app",
        host=args.host or settings.service_host,
        port=args.port or settings.service_port,
        workers=args.workers or settings.service_workers,
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
