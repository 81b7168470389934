"""``cds-service export-fhir --output DIR``: the ``/fhir`` artefacts as one FHIR transaction Bundle.

A site loads the file into its FHIR or terminology server (``POST`` it to the server's base URL) to map
its local codes to our value sets, or into a knowledge repository; loading it again updates the same
resources (each entry is a ``PUT`` at the resource's id). The resources are built exactly as the
service builds them at start-up, from the same rule files and site codes (``CDS_RULES_DIR``,
``CDS_EXTRA_VALUESETS_DIR``), and each one is read back through its fhir.resources R4B model before
anything is written.

Links to the service (its CDS Hooks endpoint, each rule's page) need its public address:
``--base-url``, else ``CDS_PUBLIC_BASE_URL``; without either they are relative paths, and the command
says so.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from cds_service.config import Settings
from cds_service.tools.console import Console

FILE_NAME = "hip-weakness-cds-knowledge.transaction.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="folder to write into")
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="the service's public URL for links (default: $CDS_PUBLIC_BASE_URL; else relative links)",
    )


def run(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    from pydantic import ValidationError

    from cds_service.artefacts import Links, build_artefacts, transaction
    from cds_service.catalog import load_catalog
    from cds_service.registry import RuleFileError

    console = console or Console()
    base = (args.base_url or settings.public_base_url or "").rstrip("/")
    try:
        catalog = load_catalog(settings.rules_dir, settings.extra_valuesets_dir)
        artefacts = build_artefacts(catalog, Links(base), datetime.now(UTC), validate=True)
    except RuleFileError as exc:
        raise SystemExit(f"cds-service: invalid rule file: {exc}") from None
    except ValidationError as exc:  # a bug, not a user error: say which resource and field
        raise SystemExit(f"cds-service: a generated resource is not valid FHIR R4: {exc}") from None
    bundle = transaction(artefacts.knowledge())
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / FILE_NAME
    path.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
    counts = ", ".join(f"{n} {t}" for t, n in sorted(artefacts.counts().items()))
    console.line(f"{path}: transaction Bundle of {len(bundle['entry'])} resources ({counts})")
    if not base:
        console.warn("no --base-url or CDS_PUBLIC_BASE_URL: links to the service are relative paths")
    return 0
