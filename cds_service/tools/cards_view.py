"""Cards as a clinician-readable terminal listing: indicator, summary, the findings that fired, what to
do, suggestions, source and links.

The card ``detail`` is the service's markdown (``cards.py``): ``**Heading**`` lines open sections and
bullets name each finding with its code and date. It is shown as plain text with the markup removed
(bold kept when colour is on) rather than re-derived, so the terminal says exactly what the EHR shows.
"""

from __future__ import annotations

import logging
import re
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from cds_service.tools.console import Console

logger = logging.getLogger(__name__)

_INDICATORS = {
    "critical": ("CRITICAL", ("red", "bold")),
    "warning": ("WARNING", ("yellow", "bold")),
    "info": ("INFO", ("blue", "bold")),
}
_HEADING = re.compile(r"^\*\*(.+?)\*\*:?$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC_LINE = re.compile(r"^_(.+)_$")
_SECTION_NAMES = {"why": "findings", "what to do": "what to do"}
LABEL_WIDTH = 12


def render(response: Mapping[str, Any], console: Console, *, title: str) -> list[str]:
    """The lines to print for a CDS Hooks response (``title``: patient and service, for the header)."""
    cards = [c for c in response.get("cards") or [] if isinstance(c, Mapping)]
    width = _width(console)
    if not cards:
        return [f"{title}: no cards."]
    lines = [f"{title}: {len(cards)} card{'s' if len(cards) != 1 else ''}", ""]
    for card in cards:
        lines.extend(_card(card, console, width))
        lines.append("")
    return lines[:-1]


def _card(card: Mapping[str, Any], console: Console, width: int | None) -> list[str]:
    indicator = str(card.get("indicator") or "info")
    label, styles = _INDICATORS.get(indicator, (indicator.upper(), ("bold",)))
    lines = [f"{console.style(f'{label:<9}', *styles)}{console.style(str(card.get('summary', '')), 'bold')}"]
    source = card.get("source") or {}
    topic = source.get("topic") or {}
    if topic.get("code"):
        shown = f"{topic['code']} ({topic['display']})" if topic.get("display") else str(topic["code"])
        lines += _field("category", [shown], width)
    sections = _sections(str(card.get("detail") or ""))
    for name, body in sections:
        if name != "rules":
            lines += _field(name, [_inline(b, console) for b in body], width)
    suggestions = [s for s in card.get("suggestions") or [] if isinstance(s, Mapping)]
    if suggestions:
        lines += _field("suggestions", [_suggestion(s) for s in suggestions], width)
    if source.get("label"):
        where = f" <{source['url']}>" if source.get("url") else ""
        lines += _field("source", [f"{source['label']}{where}"], width)
    for name, body in sections:
        if name == "rules":
            lines += _field(name, body, width)
    links = [f"{link.get('label')} <{link.get('url')}>" for link in card.get("links") or []]
    if links:
        lines += _field("links", links, width)
    return lines


def _sections(detail: str) -> list[tuple[str, list[str]]]:
    """``**Why** / - ...`` markdown -> [("findings", [...]), ...]; text before a heading is "detail"."""
    sections: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for raw in detail.splitlines():
        if not raw.strip():
            continue
        heading = _HEADING.match(raw.strip())
        if heading:
            name = heading.group(1).strip()
            current = []
            sections.append((_SECTION_NAMES.get(name.lower(), name.lower()), current))
            continue
        italic = _ITALIC_LINE.match(raw.strip())
        if italic and raw.strip().startswith("_Rules:"):
            sections.append(("rules", [italic.group(1).removeprefix("Rules:").strip()]))
            current = None
            continue
        if current is None:
            current = []
            sections.append(("detail", current))
        current.append(raw.rstrip())
    return [(name, body) for name, body in sections if body]


def _suggestion(suggestion: Mapping[str, Any]) -> str:
    text = f"[ ] {suggestion.get('label', '')}"
    if suggestion.get("isRecommended"):
        text += " (recommended)"
    for action in suggestion.get("actions") or []:
        resource = action.get("resource") or {}
        codings = (resource.get("code") or {}).get("coding") or []
        if resource.get("resourceType") and codings:
            code = codings[0]
            text += f": {action.get('type', 'create')} {resource['resourceType']} {code.get('code')}"
            if code.get("display"):
                text += f" {code['display']}"
    return text


def _inline(text: str, console: Console) -> str:
    bullet = re.match(r"^(\s*)- (.*)$", text)
    if bullet:
        text = f"{bullet.group(1)}- {bullet.group(2)}"
    return _BOLD.sub(lambda m: console.style(m.group(1), "bold"), text)


def _field(name: str, values: Sequence[str], width: int | None) -> list[str]:
    """``  name        value`` with continuation lines aligned under the first value."""
    indent = " " * (LABEL_WIDTH + 2)
    out: list[str] = []
    for i, value in enumerate(values):
        prefix = f"  {name:<{LABEL_WIDTH}}" if i == 0 else indent
        if width is None:
            out.append(prefix + value)
            continue
        lead = len(value) - len(value.lstrip())
        wrapped = textwrap.wrap(
            value.strip(),
            width=max(40, width - len(indent) - lead),
            subsequent_indent="  ",
            break_on_hyphens=False,
        ) or [""]
        out.append(prefix + " " * lead + wrapped[0])
        out.extend(indent + " " * lead + w for w in wrapped[1:])
    return out


def _width(console: Console) -> int | None:
    """Wrap to the terminal only when writing to one; pipes and files get whole lines."""
    isatty = getattr(console.out, "isatty", None)
    return shutil.get_terminal_size((100, 24)).columns if isatty and isatty() else None
