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
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from cds_service.config import Environment, Settings
from cds_service.logs import logging_config
from cds_service.metrics import prepare_multiprocess_dir
from cds_service.tools import export_fhir


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

    from cds_service.catalog import load_catalog
    from cds_service.registry import RuleFileError
    from cds_service.serving import serve

    settings = load_settings()
    if settings.env is not Environment.production:
        _local_secrets(args.port)
        settings = load_settings()
    try:
        load_catalog(settings.rules_dir, settings.extra_valuesets_dir, settings.ehr_profile)
    except RuleFileError as exc:
        raise SystemExit(f"cds-service: invalid rule file: {exc}") from None
    if settings.env is Environment.production:
        _require_database(settings)
    prepare_multiprocess_dir(str(settings.data_dir / f"prometheus-{args.port}"))
    config = uvicorn.Config(
        "cds_service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config(settings),
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        timeout_keep_alive=int(settings.keep_alive_seconds),
    )
    return serve(config)


def _require_database(settings: Settings) -> None:
    """Production: refuse to start without the database (a later outage is survived and spooled)."""
    from cds_service.audit.database import Database, describe_error

    database = Database.from_settings(settings)
    try:
        database.ping()
    except Exception as exc:
        raise SystemExit(
            f"cds-service: database unreachable ({database.describe()}): {describe_error(exc)}"
        ) from None
    finally:
        database.close()


def _local_secrets(port: int) -> None:
    """Development: one random audit token and hash key shared by all workers (set before they start)."""
    if not os.environ.get("CDS_AUDIT_TOKEN"):
        os.environ["CDS_AUDIT_TOKEN"] = secrets.token_urlsafe(24)
        print(
            "cds-service: generated a local audit token for this run. Use it for /audit and /explain:\n"
            f"  curl -H 'Authorization: Bearer {os.environ['CDS_AUDIT_TOKEN']}' http://127.0.0.1:{port}/audit/stats",
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


# -- load-fixtures and check (logic in cds_service/tools) ---------------------------------------------


def _fhir_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL")
    p.add_argument(
        "--token",
        default=os.environ.get("FHIR_ACCESS_TOKEN"),
        metavar="T",
        help="bearer token for the FHIR server (default: $FHIR_ACCESS_TOKEN; never printed)",
    )


def load_fixtures_arguments(p: argparse.ArgumentParser) -> None:
    _fhir_arguments(p)
    p.add_argument("--fixtures", type=Path, metavar="DIR", help="fixture folder (default: fhir_fixtures/)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAMES",
        help="only these files (name prefixes, comma-separated or repeated: V01,V33,Barney)",
    )
    p.add_argument(
        "--today",
        type=_iso_date,
        metavar="YYYY-MM-DD",
        help="move vignette dates to this day (default: today)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_load_fixtures(args: argparse.Namespace) -> int:
    from cds_service.tools import load_fixtures
    from cds_service.tools.console import Console

    options = load_fixtures.LoadOptions(
        fhir_server=args.fhir_server,
        token=args.token,
        fixtures=args.fixtures or load_fixtures.DEFAULT_FIXTURES,
        only=load_fixtures.parse_only(args.only),
        today=args.today,
        as_json=args.json,
    )
    return load_fixtures.run(options, Console())


def check_arguments(p: argparse.ArgumentParser) -> None:
    _fhir_arguments(p)
    p.add_argument("--patient", required=True, metavar="ID", help="Patient id on the FHIR server")
    p.add_argument("--hook", default="patient-view", choices=["patient-view", "order-select", "order-sign"])
    p.add_argument("--service", dest="service_id", metavar="ID", help="service id (default: by hook)")
    p.add_argument(
        "--service-url", metavar="URL", help="a running service (default: the service in this process)"
    )
    p.add_argument(
        "--no-prefetch",
        dest="prefetch",
        action="store_false",
        help="send no prefetch: the service fetches everything from the FHIR server",
    )
    p.add_argument("--user", default="Practitioner/cds-service-check", help="context.userId")
    p.add_argument("--draft-orders", type=Path, metavar="FILE", help="Bundle of draft orders (order hooks)")
    p.add_argument("--json", action="store_true", help="print the raw CDS Hooks response")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run_check(args: argparse.Namespace) -> int:
    from cds_service.tools import check
    from cds_service.tools.console import Console

    options = check.CheckOptions(
        fhir_server=args.fhir_server,
        patient=args.patient,
        token=args.token,
        hook=args.hook,
        service_id=args.service_id,
        service_url=args.service_url,
        prefetch=args.prefetch,
        user=args.user,
        draft_orders=args.draft_orders,
        as_json=args.json,
    )
    return check.run(options, Console(quiet=args.quiet))


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


# -- entry point ----------------------------------------------------------------------------------------


# -- migrate ------------------------------------------------------------------------------------------


def run_migrate(_args: argparse.Namespace) -> int:
    from cds_service.audit.database import migrate_command

    return migrate_command(load_settings())


def migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Apply the database migrations (CDS_DATABASE_URL, else the SQLite file in CDS_DATA_DIR)."


# -- settings-doc ---------------------------------------------------------------------------------------


def run_settings_doc(args: argparse.Namespace) -> int:
    from cds_service.settings_doc import embed, settings_reference

    if args.update:
        path = Path(args.update)
        path.write_text(embed(path.read_text()))
    else:
        sys.stdout.write(settings_reference())
    return 0


def settings_doc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--update", metavar="FILE", help="rewrite the reference between the markers in FILE")


COMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand("run the service with uvicorn", serve_arguments, run_serve),
    "export-openapi": Subcommand(
        "write the OpenAPI document (default: stdout)", export_arguments, run_export_openapi
    ),
    "export-fhir": Subcommand(
        "write the rules and value sets as a FHIR transaction Bundle (PlanDefinition, ValueSet, ...)",
        export_fhir.add_arguments,
        lambda args: export_fhir.run(args, load_settings(env="development", auth="off")),
    ),
    "load-fixtures": Subcommand(
        "load the test patients into a FHIR server (idempotent)", load_fixtures_arguments, run_load_fixtures
    ),
    "check": Subcommand(
        "call the service for one patient on a FHIR server and show the cards", check_arguments, run_check
    ),
    "settings-doc": Subcommand(
        "print the settings reference (markdown) generated from the settings model",
        settings_doc_arguments,
        run_settings_doc,
    ),
    "migrate": Subcommand(
        "apply the database migrations (also done at start-up)", migrate_arguments, run_migrate
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
