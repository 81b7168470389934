"""The compiled engine: the pure, hot modules built with mypyc, used only when built from this very source.

Why: under load the rules engine was the largest stage of a hook call that the service adds to the
framework's own cost. mypyc (it ships with mypy, which already type-checks this code strictly) turns the
same typed Python into a C extension: CPU per request 2.93 -> 2.52 ms under load (docs/performance.md).

The source stays the one truth. The same ``.py`` files are read, type-checked and tested; ``make``
compiles them (``scripts/build_native.py``; the list is ``[tool.cds-native]`` in pyproject.toml) into the
virtual environment (``<sys.prefix>/cds-native/``), never beside the source, where a stale build would
shadow an edited file. A compiled module is used only while the build's manifest holds the SHA-256 of
every file the build was made from (every module of the package and pyproject.toml: ``inputs``) and
each still matches, for this Python; otherwise (a file edited, added or removed since the build, another
interpreter, no build, ``CDS_NATIVE=off``) every module runs interpreted. All or none, so compiled and
interpreted modules never mix. The service logs which at start-up. Each build lives in its own
directory and the manifest is replaced in one step, so a process starting during a build loads either
the old build or the new one, never half of each.

This runs when the package is imported, before any engine module is, so it reads ``CDS_NATIVE`` from
the environment itself (the settings object is built later; it declares the same variable, so it is
documented and validated there too).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TypeGuard

MANIFEST = "manifest.json"
FORMAT = 2
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """Where ``make`` puts the compiled modules: inside the virtual environment they were built for."""
    return Path(sys.prefix) / "cds-native"


def python_tag() -> str:
    """The interpreter a build is valid for (extension modules are tied to its ABI)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs(source_root: Path) -> dict[str, str]:
    """What a build is made from, path -> SHA-256: every module of the package, not only the compiled
    ones, because mypyc builds in the types of what a compiled module imports (a field retyped in an
    interpreted module would otherwise fail at run time), and pyproject.toml (mypy's configuration and
    the list of compiled modules)."""
    files = [*sorted(source_root.glob("cds_service/**/*.py")), source_root / "pyproject.toml"]
    return {path.relative_to(source_root).as_posix(): source_digest(path) for path in files if path.is_file()}


@dataclass(frozen=True)
class NativeState:
    """Whether the compiled modules are in use, and why not when they are not."""

    active: bool
    reason: str
    files: Mapping[str, Path] = field(default_factory=dict)
    #: A build exists but cannot be used (edited source, another Python): worth a warning at start-up.
    stale: bool = False

    @property
    def modules(self) -> tuple[str, ...]:
        return _service_modules(self.files)


def _service_modules(files: Mapping[str, Path]) -> tuple[str, ...]:
    """The compiled modules of the service (the build's shared library excluded)."""
    return tuple(sorted(m for m in files if not m.endswith("__mypyc")))


def plan(directory: Path, source_root: Path, environ: Mapping[str, str]) -> NativeState:
    """Decide from the build's manifest whether its modules may be loaded. Never raises: it runs while
    the package is imported, and whatever is wrong with a build, the interpreted source still works."""
    mode = environ.get("CDS_NATIVE", "auto")
    if mode == "off":
        return NativeState(False, "interpreted: CDS_NATIVE=off")
    if mode != "auto":  # the settings refuse it at start-up; until then, the side that always works
        return NativeState(False, "interpreted: CDS_NATIVE is neither auto nor off")
    try:
        return _check(directory, source_root)
    except Exception as exc:  # any surprise in a build means: do not load it
        return _stale(f"unreadable build ({type(exc).__name__})")


def _check(directory: Path, source_root: Path) -> NativeState:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NativeState(False, "interpreted: no compiled build (`make` builds one)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return _stale("build manifest of another format")
    if manifest.get("python") != python_tag():
        return _stale("built for another Python")
    sources, files = manifest.get("sources"), manifest.get("files")
    if not _names(sources) or not _names(files):
        return _stale("empty or malformed build manifest")
    now = inputs(source_root)
    changed = sorted(path for path in sources.keys() | now.keys() if sources.get(path) != now.get(path))
    if changed:
        return _stale(f"{changed[0]} changed since the build")
    located = {module: directory / relative for module, relative in files.items()}
    missing = sorted(module for module, path in located.items() if not path.is_file())
    if missing:
        return _stale(f"compiled file missing for {missing[0]}")
    count = len(_service_modules(located))
    return NativeState(True, f"compiled: {count} modules (mypyc {manifest.get('mypyc', '?')})", located)


def _names(value: object) -> TypeGuard[dict[str, str]]:
    """A non-empty mapping of names to names, as the manifest's ``sources`` and ``files`` are."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


def _stale(reason: str) -> NativeState:
    return NativeState(False, f"interpreted: {reason} (run `make`)", stale=True)


class CompiledModules(importlib.abc.MetaPathFinder):
    """Finds exactly the modules of a current build, in the build directory; defers on every other name."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def activate(environ: Mapping[str, str] = os.environ) -> NativeState:
    """Install the finder when the build is current. Called once, when ``cds_service`` is imported."""
    state = plan(build_dir(), SOURCE_ROOT, environ)
    if state.active and not any(isinstance(f, CompiledModules) for f in sys.meta_path):
        sys.meta_path.insert(0, CompiledModules(state.files))
    return state
