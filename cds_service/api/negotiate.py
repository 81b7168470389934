"""Content negotiation on ``Accept``: HTML for a browser, JSON (the documented default) for everyone else.

The URLs cards link to (``/rules/{id}``) are opened by clinicians in a browser and read by API clients.
A browser sends ``text/html`` with a higher quality than ``*/*``; curl sends ``*/*``, Swagger UI
``application/json``. HTML wins only when it is asked for more strongly than JSON; a tie keeps JSON.
"""

from __future__ import annotations

from fastapi import Request

_HTML = ("text/html", "application/xhtml+xml")
_JSON = ("application/json", "application/fhir+json", "application/*")


def wants_html(request: Request) -> bool:
    html = json = 0.0
    for part in request.headers.get("accept", "").split(",")[:50]:
        media, *params = (p.strip() for p in part.split(";"))
        quality = _quality(params)
        media = media.lower()
        if media in _HTML:
            html = max(html, quality)
        elif media in _JSON or media == "*/*":
            json = max(json, quality)
    return html > json


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0
