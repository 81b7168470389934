"""The HTML side of ``/rules`` and ``/valuesets`` (``api.rules`` calls it when the browser asks for HTML),
and ``POST /rules/{id}``: the page again, with the audit trail's statistics for a holder of the audit token.

The token comes from the page's form (a browser does not send ``Authorization`` on a link) or, for
scripts, the ``Authorization`` header. It is never put in a URL, a cookie or the page.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from cds_service.api.deps import AppState, StateDep, is_audit_token
from cds_service.audit.database import StoreUnavailable
from cds_service.pages.render import render_index, render_rule, render_valueset

router = APIRouter()
MAX_FORM_BYTES = 4096
PAGE_HEADERS = {"Cache-Control": "no-store", "Vary": "Accept"}


async def rule_html(state: AppState, rule_id: str, token: str | None) -> HTMLResponse:
    rule = state.catalog.rule(rule_id)
    if rule is None:
        raise HTTPException(404, f"Unknown rule {rule_id[:64]!r}")
    stats, note = await _stats(state, rule_id, token)
    examples = await asyncio.to_thread(state.examples.for_rule, rule_id)
    html = render_rule(state.catalog, rule, examples, stats=stats, stats_note=note)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def valueset_html(state: AppState, valueset_id: str) -> HTMLResponse:
    vs = state.catalog.valueset_files.get(valueset_id)
    if vs is None:
        raise HTTPException(404, f"Unknown value set {valueset_id[:64]!r}")
    return HTMLResponse(render_valueset(state.catalog, vs), headers=PAGE_HEADERS)


def index_html(state: AppState) -> HTMLResponse:
    return HTMLResponse(render_index(state.catalog), headers=PAGE_HEADERS)


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@router.post("/rules/{rule_id}", include_in_schema=False)
async def rule_page_with_statistics(rule_id: str, request: Request, state: StateDep) -> HTMLResponse:
    """The rule page's form: the audit token as ``audit_token`` (form-encoded)."""
    body = await request.body()
    form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"))
    sent = form.get("audit_token", [])
    token = (sent[0] if sent else None) or bearer(request)
    return await rule_html(state, rule_id, token)


async def _stats(
    state: AppState, rule_id: str, token: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    if token is None:
        return None, None
    if not is_audit_token(state.settings, token):
        return None, "That is not the audit token."
    try:
        stats = await state.audit.stats(None, None, None)
    except StoreUnavailable:
        return None, "The audit trail is unavailable; try again later."
    row = next((r for r in stats.rules if r.rule_id == rule_id), None)
    return (row.model_dump(mode="json") if row else {"fired": 0}), None
