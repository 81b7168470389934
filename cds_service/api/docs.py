"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every script and style sheet served by the service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: on a hospital network without internet access
they render blank ("SwaggerUIBundle is not defined") and the *Authorize* button reviewers need is gone.
The assets come from the pinned ``fastapi-offline`` package (Swagger UI 5, ReDoc 2), mounted under
``/docs-assets``; nothing on these pages leaves the machine (no Google fonts, no online validator badge).

``/openapi.json`` is served here too, with the hook-call examples moved to today's date: the examples are
fixture patients written for ``fixtures.ANCHOR``, and a red flag "within 14 days" of January would not fire
in November, so "Try it out" would show no cards. ``app.openapi()`` itself stays dated at the anchor, so
the exported ``openapi/openapi.json`` does not change from day to day.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cds_service.engine.dates import utc_today
from cds_service.fixtures import ANCHOR, shift_dates

ASSETS_URL = "/docs-assets"
OPENAPI_URL = "/openapi.json"
HOOK_PATH = "/cds-services/{service_id}"
#: Nothing on these pages may come from another host. ReDoc's sidebar badge loads its logo from
#: cdn.redoc.ly (it hides itself when that fails): the browser is told not to try.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'self'"
)
SWAGGER_PARAMETERS: dict[str, Any] = {
    "validatorUrl": None,  # the default posts the document to validator.swagger.io
    "displayRequestDuration": True,
    "tryItOutEnabled": False,
}


def install(app: FastAPI) -> None:
    """Mount the assets and add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and ``/openapi.json``.

    The app must be created with ``docs_url=None, redoc_url=None, openapi_url=None``."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    title = app.title

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        days = (utc_today(request.app.state.cds.orchestrator.clock()) - ANCHOR).days
        return JSONResponse(dated_examples(app.openapi(), days))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _same_origin_only(
            get_swagger_ui_html(
                openapi_url=OPENAPI_URL,
                title=f"{title}: API docs",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_ui_parameters=SWAGGER_PARAMETERS,
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _same_origin_only(
            get_redoc_html(
                openapi_url=OPENAPI_URL,
                title=f"{title}: ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def dated_examples(schema: dict[str, Any], days: int) -> dict[str, Any]:
    """``schema`` with its hook-call request examples moved ``days`` days forward (a shallow copy)."""
    operation = schema.get("paths", {}).get(HOOK_PATH, {}).get("post")
    if days == 0 or not operation:
        return schema
    operation = copy.deepcopy(operation)
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    for example in content.get("examples", {}).values():
        example["value"] = shift_dates(example["value"], days)
    paths = {**schema["paths"], HOOK_PATH: {**schema["paths"][HOOK_PATH], "post": operation}}
    return {**schema, "paths": paths}
