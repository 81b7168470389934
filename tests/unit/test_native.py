"""The compiled engine: used only when built from this very source, and it concludes what the source does.

``make`` compiles the engine's modules with mypyc into the virtual environment (scripts/build_native.py);
``cds_service.native`` loads them only while the build's manifest matches every source file, for this
Python. Here: the build ``make test`` just made is the one in use; every reason to refuse a build is
honoured; and every test patient evaluated by the compiled engine (this process) and by the interpreted
source (a process started with ``CDS_NATIVE=off``) gives the same conclusions, evidence and trace.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from cds_service import NATIVE, native
from cds_service.catalog import load_catalog
from cds_service.config import Settings
from tests.patients import evaluate, every_test_patient, summary
from tests.support import ROOT

COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cds-native"][
    "modules"
]
INTERPRETED_RUN = os.environ.get("CDS_NATIVE", "").strip().lower() == "off"


def conclusions() -> bytes:
    """Every test patient's evaluation summary as JSON (sets sorted, so that two runs compare)."""
    engine = load_catalog(Settings(env="development", auth="off").rules_dir).engine

    def sets(value: object) -> list[Any]:
        if isinstance(value, set | frozenset):
            return sorted(value, key=repr)
        raise TypeError(type(value).__name__)

    out = {name: summary(evaluate(engine, body)) for name, body in every_test_patient()}
    return orjson.dumps(out, default=sets, option=orjson.OPT_NON_STR_KEYS)


@pytest.mark.skipif(INTERPRETED_RUN, reason="this run asked for the interpreted engine (CDS_NATIVE=off)")
def test_the_engine_runs_compiled_from_the_build_make_made() -> None:
    assert NATIVE.active, f"{NATIVE.reason}: `make test` builds the compiled engine before the tests"
    assert sorted(NATIVE.modules) == sorted(COMPILED)
    for name in COMPILED:
        module = importlib.import_module(name)
        assert isinstance(module.__spec__.loader, importlib.machinery.ExtensionFileLoader), name
        assert Path(str(module.__file__)).is_relative_to(native.build_dir()), name


@pytest.mark.skipif(INTERPRETED_RUN, reason="this run asked for the interpreted engine (CDS_NATIVE=off)")
def test_compiled_and_interpreted_engines_conclude_the_same_on_every_test_patient() -> None:
    script = (
        "import sys, cds_service.engine.engine as e\n"
        "from tests.unit.test_native import conclusions\n"
        "assert type(e.__spec__.loader).__name__ == 'SourceFileLoader', e.__spec__.loader\n"
        "sys.stdout.buffer.write(conclusions())\n"
    )
    interpreted = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "CDS_NATIVE": "off"},
        capture_output=True,
        check=True,
        timeout=600,
    ).stdout
    compiled = conclusions()
    want, got = json.loads(interpreted), json.loads(compiled)
    assert len(got) > 250
    for name in want:
        assert got[name] == want[name], name
    assert compiled == interpreted


# -- when a build is refused ---------------------------------------------------------------------------


def _build(tmp_path: Path, **manifest: Any) -> tuple[Path, Path]:
    """A source tree with one module and a build of it (the extension file need only exist here)."""
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    build = tmp_path / "build"
    (build / "pkg").mkdir(parents=True)
    extension = f"pkg/mod{native.python_tag()}"
    (build / extension).write_bytes(b"\x7fELF")
    content = {
        "format": native.FORMAT,
        "python": native.python_tag(),
        "mypyc": "test",
        "sources": {"pkg/mod.py": native.source_digest(source / "pkg" / "mod.py")},
        "files": {"pkg.mod": extension},
        **manifest,
    }
    (build / native.MANIFEST).write_text(json.dumps(content))
    return build, source


def test_a_current_build_is_used(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    state = native.plan(build, source, {})
    assert state.active and not state.stale
    assert state.modules == ("pkg.mod",)
    assert state.files["pkg.mod"] == build / f"pkg/mod{native.python_tag()}"


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_cds_native_off_runs_interpreted(tmp_path: Path, value: str) -> None:
    build, source = _build(tmp_path)
    state = native.plan(build, source, {"CDS_NATIVE": value})
    assert not state.active and not state.stale
    assert "CDS_NATIVE=off" in state.reason


def test_no_build_runs_interpreted_without_a_warning(tmp_path: Path) -> None:
    state = native.plan(tmp_path / "nothing", tmp_path, {})
    assert not state.active and not state.stale


def test_a_source_edited_after_the_build_refuses_the_whole_build(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    (source / "pkg" / "mod.py").write_text("X = 2\n")
    state = native.plan(build, source, {})
    assert not state.active and state.stale
    assert "pkg/mod.py changed since the build" in state.reason


def test_a_deleted_source_refuses_the_build(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    (source / "pkg" / "mod.py").unlink()
    assert native.plan(build, source, {}).stale


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({"python": ".cpython-399-x86_64-linux-gnu.so"}, "another Python"),
        ({"format": native.FORMAT + 1}, "another format"),
        ({"files": {}}, "empty build manifest"),
        ({"files": {"pkg.mod": "pkg/gone.so"}}, "compiled file missing for pkg.mod"),
    ],
)
def test_a_build_that_does_not_fit_is_refused(tmp_path: Path, manifest: dict[str, Any], reason: str) -> None:
    build, source = _build(tmp_path, **manifest)
    state = native.plan(build, source, {})
    assert not state.active and state.stale
    assert reason in state.reason


def test_an_unreadable_manifest_is_refused_not_raised(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    (build / native.MANIFEST).write_text("{not json")
    state = native.plan(build, source, {})
    assert not state.active and state.stale


def test_the_finder_answers_only_for_the_modules_of_the_build(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    finder = native.CompiledModules(native.plan(build, source, {}).files)
    spec = finder.find_spec("pkg.mod")
    assert spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert spec.origin == str(build / f"pkg/mod{native.python_tag()}")
    assert finder.find_spec("pkg.other") is None
    assert finder.find_spec("cds_service.engine.engine") is None
