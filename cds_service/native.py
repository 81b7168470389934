"""The compiled engine: the pure, hot modules built with mypyc, used only when built from this very source.

Why: under load the rules engine was the largest stage of a hook call that the service adds to the
framework's own cost. mypyc (it ships with mypy, which already type-checks this code strictly) turns the
same typed Python into a C extension: CPU per request 2.93 -> 2.52 ms under load (docs/performance.md).

The source stays the one truth. The same ``.py`` files are read, type-checked and tested; ``make``
compiles them (``scripts/build_native.py``; the list is ``[tool.cds-native]`` in pyproject.toml) into the
virtual environment (``<sys.prefix>/cds-native/``), never beside the source, where a stale build would
shadow an edited file. A compiled module is used only while the build's manifest holds the SHA-256 of
every source file it compiled and each still matches, for this Python; otherwise (a file edited since
the build, another interpreter, no build, ``CDS_NATIVE=off``) every module runs interpreted. All or none,
so compiled and interpreted modules never mix. The service logs which at start-up.

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

MANIFEST = "manifest.json"
FORMAT = 1
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """Where ``make`` puts the compiled modules: inside the virtual environment they were built for."""
    return Path(sys.prefix) / "cds-native"


def python_tag() -> str:
    """The interpreter a build is valid for (extension modules are tied to its ABI)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        """The compiled modules of the service (the build's shared library excluded)."""
        return tuple(sorted(m for m in self.files if not m.endswith("__mypyc")))


def plan(directory: Path, source_root: Path, environ: Mapping[str, str]) -> NativeState:
    """Decide from the build's manifest whether its modules may be loaded; never raises."""
    if environ.get("CDS_NATIVE", "auto").strip().lower() == "off":
        return NativeState(False, "interpreted: CDS_NATIVE=off")
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NativeState(False, "interpreted: no compiled build (`make` builds one)")
    except (OSError, ValueError) as exc:
        return _stale(f"unreadable build manifest ({type(exc).__name__})")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return _stale("build manifest of another format")
    if manifest.get("python") != python_tag():
        return _stale("built for another Python")
    sources: dict[str, str] = manifest.get("sources") or {}
    files: dict[str, str] = manifest.get("files") or {}
    if not sources or not files:
        return _stale("empty build manifest")
    for relative, digest in sources.items():
        path = source_root / relative
        if not path.is_file() or source_digest(path) != digest:
            return _stale(f"{relative} changed since the build")
    located = {module: directory / relative for module, relative in files.items()}
    missing = sorted(module for module, path in located.items() if not path.is_file())
    if missing:
        return _stale(f"compiled file missing for {missing[0]}")
    count = sum(1 for module in located if not module.endswith("__mypyc"))
    return NativeState(True, f"compiled: {count} modules (mypyc {manifest.get('mypyc', '?')})", located)


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
