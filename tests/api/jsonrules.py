"""CDS Hooks §Use of JSON: no null or empty members anywhere (``cards: []`` is the exception)."""

from __future__ import annotations

from typing import Any


def assert_no_empty_members(value: Any, path: str = "$") -> None:
    if isinstance(value, dict):
        for key, member in value.items():
            where = f"{path}.{key}"
            if key == "cards" and member == []:
                continue
            assert member is not None, f"{where} is null"
            assert member not in ("", [], {}), f"{where} is empty"
            assert_no_empty_members(member, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_no_empty_members(item, f"{path}[{i}]")
