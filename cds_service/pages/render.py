"""Jinja2 rendering: templates shipped as package data, HTML-escaped, a tiny markdown subset for card text.

Card texts in ``rules/`` are markdown (``**bold**``); pages render only bold and italics after escaping,
so rule authors cannot inject markup and no markdown library is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from cds_service.catalog import Catalog
from cds_service.engine.code_files import ValueSetFile
from cds_service.engine.evaluate import CompiledRule
from cds_service.pages.examples import ExamplePatient
from cds_service.pages.views import PATHWAY_NAMES, index_page, rule_page

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])_(.+?)_(?![\w*])")
_URL = re.compile(r"^https?://\S+$")


def inline_markdown(text: str | None) -> Markup:
    """``**bold**`` and ``_italics_`` of an already escaped text."""
    html = str(escape(text or ""))
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    return Markup(_ITALIC.sub(r"<em>\1</em>", html))


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cds_service.pages", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = inline_markdown
    env.tests["url"] = lambda value: isinstance(value, str) and bool(_URL.match(value))
    return env


def render_rule(
    catalog: Catalog,
    rule: CompiledRule,
    examples: Sequence[ExamplePatient],
    *,
    stats: Mapping[str, Any] | None = None,
    stats_note: str | None = None,
) -> str:
    page = rule_page(catalog, rule, examples, stats, stats_note)
    spec = rule.spec
    category_advice = (
        [] if spec.card.summary else [a for c in spec.recommends for a in catalog.category(c).advice]
    )
    return (
        environment()
        .get_template("rule.html")
        .render(page=page, spec=spec, category_advice=list(dict.fromkeys(category_advice)), title=spec.name)
    )


def render_valueset(catalog: Catalog, valueset: ValueSetFile) -> str:
    systems = catalog.engine.terminology.systems
    used_by = [r for r in catalog.rules if valueset.id in r.valuesets]
    return (
        environment()
        .get_template("valueset.html")
        .render(
            vs=valueset,
            systems={key: (s.label or key, s.uri) for key, s in systems.items()},
            used_by=used_by,
            title=valueset.title,
        )
    )


def render_index(catalog: Catalog) -> str:
    return (
        environment()
        .get_template("index.html")
        .render(
            groups=index_page(catalog),
            valuesets=sorted(catalog.valueset_files.values(), key=lambda v: v.title.lower()),
            rules_version=catalog.version,
            pathway_names=PATHWAY_NAMES,
            title="Rules and value sets",
        )
    )
