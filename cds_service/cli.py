"""``cds-service``: serve, export-openapi, and the implementer tools (each subcommand in its own function).

Settings and rule files are validated before the server starts, so a bad setting or rule file stops the
process with one clear message and exit status 2 instead of a traceback per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from cds_service.config import Environment, Settings


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"cds-service: invalid settings: {problems}") from None


# -- serve --------------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cds_service.registry import RuleFileError, load_ruleset

    settings = load_settings()
    if settings.env is not Environment.production:
        _local_secrets()
        settings = load_settings()
    try:
        load_ruleset(settings.rules_dir, settings.extra_valuesets_dir)
    except RuleFileError as exc:
        raise SystemExit(f"cds-service: invalid rule file: {exc}") from None
    uvicorn.run(
        "cds_service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
    )
    return 0


def _local_secrets() -> None:
    """Development: one random audit token and hash key shared by all workers (set before they start)."""
    if not os.environ.get("CDS_AUDIT_TOKEN"):
        os.environ["CDS_AUDIT_TOKEN"] = secrets.token_urlsafe(24)
        print(
            "cds-service: generated a local audit token for this run. Use it for /audit and /explain:\n"
            f"  curl -H 'Authorization: Bearer {os.environ['CDS_AUDIT_TOKEN']}' http://127.0.0.1:8080/audit/stats",
            file=sys.stderr,
        )
    os.environ.setdefault("CDS_PATIENT_HASH_SECRET", secrets.token_urlsafe(32))


def serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    p.add_argument("--workers", type=int, default=1)


# -- export-openapi -----------------------------------------------------------------------------------


def run_export_openapi(args: argparse.Namespace) -> int:
    from cds_service.main import create_app

    app = create_app(load_settings(env="development", auth="off"))
    text = json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", help="file to write, e.g. openapi/openapi.json")


# -- entry point ----------------------------------------------------------------------------------------


COMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand("run the service with uvicorn", serve_arguments, run_serve),
    "export-openapi": Subcommand(
        "write the OpenAPI document (default: stdout)", export_arguments, run_export_openapi
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds-service", description="Hip weakness CDS Hooks service")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    raise SystemExit(main())
