"""The settings reference (markdown), generated from the ``Settings`` model: ``cds-service settings-doc``.

docs/deployment.md embeds it between markers; a test fails when the document and the model disagree.
"""

from __future__ import annotations

import re
from typing import Any

from cds_service.config import PROJECT_ROOT, Settings

START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"


def settings_reference() -> str:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    lines = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `{prefix}{name.upper()}` | {_type(field.annotation)} | {_default(default)} | {meaning} |"
        )
    return "\n".join(lines) + "\n"


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not hasattr(annotation, "__args__") else None
    text = text or str(annotation)
    text = re.sub(r"\b(pathlib|typing|pydantic\.types|cds_service\.config)\.", "", text)
    text = text.replace("SecretStr", "secret").replace("NoneType", "None")
    return text.replace("|", "or")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if hasattr(value, "value"):  # enums
        return f"`{value.value}`"
    text = str(value)
    root = str(PROJECT_ROOT)
    if text.startswith(root):
        text = "<project>" + text[len(root) :]
    return f"`{text}`"


def embed(document: str) -> str:
    """``document`` with the text between the markers replaced by the current reference."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_reference()}{END}{tail}"
