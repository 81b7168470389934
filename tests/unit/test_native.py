"""The compiled engine: used only when built from this very source, and it concludes what the source does.

``make`` compiles the engine's modules with mypyc into the virtual environment (scripts/build_native.py);
``cds_service.native`` loads them only while the build's manifest matches every source file, for this
Python. Here: the build ``make test`` just made is the one in use; every test patient evaluated by the
compiled engine (this process) and by the interpreted source (a process started with ``CDS_NATIVE=off``)
gives the same conclusions, evidence, trace and cards; every reason to refuse a build is honoured; and a
build that fails, or whose sources change while it runs, never replaces the one in use.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from cds_service import NATIVE, native
from cds_service.cards import CardContext, build_cards
from cds_service.catalog import load_catalog
from cds_service.config import Settings
from cds_service.main import create_app
from cds_service.trace import evaluation_trace
from scripts import build_native
from tests.conftest import make_settings
from tests.patients import evaluate, every_test_patient, summary
from tests.support import ROOT, counter_ids

COMPILED = build_native.configured_modules(ROOT)
INTERPRETED_RUN = os.environ.get("CDS_NATIVE", "auto") == "off"


def conclusions() -> bytes:
    """Every test patient's evaluation summary, full trace and cards as JSON (sets sorted, ids counted,
    so that two runs compare)."""
    catalog = load_catalog(Settings(env="development", auth="off").rules_dir)

    def sets(value: object) -> list[Any]:
        if isinstance(value, set | frozenset):
            return sorted(value, key=repr)
        raise TypeError(type(value).__name__)

    out: dict[str, Any] = {}
    for name, body in every_test_patient():
        evaluation = evaluate(catalog, body)
        context = CardContext(
            body["context"]["patientId"], "https://cds.example.org", id_factory=counter_ids()
        )
        out[name] = {
            "summary": summary(evaluation),
            "trace": evaluation_trace(evaluation, catalog.version),
            "cards": [
                card.model_dump(mode="json") for card in build_cards(evaluation, catalog.cards, context)
            ],
        }
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
    assert NATIVE.active, NATIVE.reason  # else this would compare the interpreted engine with itself
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
    assert sum(len(patient["cards"]) for patient in got.values()) > 250
    for name in want:
        assert got[name] == want[name], name
    assert compiled == interpreted


# -- when a build is refused ---------------------------------------------------------------------------


def _source(tmp_path: Path) -> Path:
    """A source tree with a package of one module and a pyproject.toml."""
    source = tmp_path / "src"
    (source / "cds_service").mkdir(parents=True)
    (source / "cds_service" / "mod.py").write_text("X = 1\n")
    (source / "pyproject.toml").write_text('[tool.cds-native]\nmodules = ["cds_service.mod"]\n')
    return source


def _build(tmp_path: Path, **manifest: Any) -> tuple[Path, Path]:
    """A source tree and a build of it (the extension file need only exist here)."""
    source = _source(tmp_path)
    build = tmp_path / "build"
    extension = f"build-1/cds_service/mod{native.python_tag()}"
    (build / extension).parent.mkdir(parents=True)
    (build / extension).write_bytes(b"\x7fELF")
    content = {
        "format": native.FORMAT,
        "python": native.python_tag(),
        "mypyc": "test",
        "sources": native.inputs(source),
        "files": {"cds_service.mod": extension},
        **manifest,
    }
    (build / native.MANIFEST).write_text(json.dumps(content))
    return build, source


def test_a_current_build_is_used(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    state = native.plan(build, source, {})
    assert state.active and not state.stale
    assert state.modules == ("cds_service.mod",)
    assert state.files["cds_service.mod"] == build / f"build-1/cds_service/mod{native.python_tag()}"
    assert state.reason == "compiled: 1 modules (mypyc test)"


def test_a_build_is_made_from_every_module_of_the_package_and_pyproject(tmp_path: Path) -> None:
    source = _source(tmp_path)
    (source / "cds_service" / "sub").mkdir()
    (source / "cds_service" / "sub" / "types.py").write_text("Y = int\n")
    (source / "cds_service" / "notes.txt").write_text("not a module")
    assert sorted(native.inputs(source)) == [
        "cds_service/mod.py",
        "cds_service/sub/types.py",
        "pyproject.toml",
    ]


def test_cds_native_off_runs_interpreted(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    state = native.plan(build, source, {"CDS_NATIVE": "off"})
    assert not state.active and not state.stale
    assert state.reason == "interpreted: CDS_NATIVE=off"


@pytest.mark.parametrize("value", ["OFF", " off ", "on", ""])
def test_a_cds_native_value_the_settings_refuse_runs_interpreted(tmp_path: Path, value: str) -> None:
    """The settings accept exactly auto and off (and stop the service on anything else); until they
    are read, the package does not guess."""
    build, source = _build(tmp_path)
    state = native.plan(build, source, {"CDS_NATIVE": value})
    assert not state.active
    assert "neither auto nor off" in state.reason
    with pytest.raises(ValueError, match="native"):
        Settings(env="development", auth="off", native=value)


def test_no_build_runs_interpreted_without_a_warning(tmp_path: Path) -> None:
    state = native.plan(tmp_path / "nothing", tmp_path, {})
    assert not state.active and not state.stale


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda s: (s / "cds_service" / "mod.py").write_text("X = 2\n"), "cds_service/mod.py"),
        (lambda s: (s / "cds_service" / "mod.py").unlink(), "cds_service/mod.py"),
        (lambda s: (s / "cds_service" / "new.py").write_text("Z = 3\n"), "cds_service/new.py"),
        (lambda s: (s / "pyproject.toml").write_text("[tool.mypy]\nstrict = false\n"), "pyproject.toml"),
    ],
    ids=["edited", "deleted", "added", "pyproject"],
)
def test_a_source_changed_after_the_build_refuses_the_whole_build(
    tmp_path: Path, edit: Callable[[Path], object], path: str
) -> None:
    build, source = _build(tmp_path)
    edit(source)
    state = native.plan(build, source, {})
    assert not state.active and state.stale
    assert f"{path} changed since the build" in state.reason


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({"python": ".cpython-399-x86_64-linux-gnu.so"}, "another Python"),
        ({"format": native.FORMAT + 1}, "another format"),
        ({"files": {}}, "empty or malformed build manifest"),
        ({"sources": ["cds_service/mod.py"]}, "empty or malformed build manifest"),
        ({"files": {"cds_service.mod": 7}}, "empty or malformed build manifest"),
        ({"files": {"cds_service.mod": "build-1/gone.so"}}, "compiled file missing for cds_service.mod"),
    ],
)
def test_a_build_that_does_not_fit_is_refused(tmp_path: Path, manifest: dict[str, Any], reason: str) -> None:
    build, source = _build(tmp_path, **manifest)
    state = native.plan(build, source, {})
    assert not state.active and state.stale
    assert reason in state.reason


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_an_unreadable_manifest_is_refused_not_raised(tmp_path: Path, content: str) -> None:
    build, source = _build(tmp_path)
    (build / native.MANIFEST).write_bytes(content.encode("utf-8", "surrogateescape"))
    state = native.plan(build, source, {})
    assert not state.active and state.stale


def test_the_finder_answers_only_for_the_modules_of_the_build(tmp_path: Path) -> None:
    build, source = _build(tmp_path)
    finder = native.CompiledModules(native.plan(build, source, {}).files)
    spec = finder.find_spec("cds_service.mod")
    assert spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert spec.origin == str(build / f"build-1/cds_service/mod{native.python_tag()}")
    assert finder.find_spec("cds_service.other") is None
    assert finder.find_spec("cds_service.engine.engine") is None


@pytest.mark.skipif(not NATIVE.active, reason="no compiled build in use in this process")
def test_cds_native_off_from_a_dotenv_file_is_too_late_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(create_app(make_settings(tmp_path, native="off"))):
        pass
    assert "the settings say CDS_NATIVE=off, but the engine was loaded compiled" in caplog.text


# -- building: a failed or disturbed build never replaces the one in use ------------------------------


def _fake_compiler(
    source: Path, *, fail: BaseException | None = None, edit: Callable[[Path], None] | None = None
) -> build_native.Compiler:
    """Writes one "extension module" as mypyc would; can fail, or edit a source while it runs."""

    def compile_to(sources: list[str], out: Path, temp: Path) -> None:
        assert sources == ["cds_service/mod.py"]
        os.write(1, b"compiler output the log keeps\n")  # as gcc and mypyc do, on the file descriptor
        if edit:
            edit(source / "cds_service" / "mod.py")
        if fail:
            raise fail
        (out / "cds_service").mkdir()
        (out / "cds_service" / f"mod{native.python_tag()}").write_bytes(b"\x7fELF")

    return compile_to


def _in_use(target: Path, source: Path) -> Path:
    state = native.plan(target, source, {})
    assert state.active, state.reason
    return state.files["cds_service.mod"].relative_to(target).parents[-2]


def test_a_build_is_published_in_a_directory_of_its_own_and_the_one_before_is_kept(tmp_path: Path) -> None:
    source, target = _source(tmp_path), tmp_path / "cds-native"
    target.mkdir()
    builds = []
    for _ in range(3):
        assert build_native.build(source, target, _fake_compiler(source)) == 0
        builds.append(_in_use(target, source))
    assert len(set(builds)) == 3
    kept = sorted(p.name for p in target.iterdir() if p.is_dir())
    assert kept == sorted(str(b) for b in builds[1:])  # the oldest is gone; no work directory is left
    assert sorted(p.name for p in target.iterdir() if p.is_file()) == [native.MANIFEST]


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (RuntimeError("the compiler gave up"), "RuntimeError: the compiler gave up"),
        (SystemExit(1), "SystemExit: 1"),  # what mypyc does after printing the type errors it found
    ],
    ids=["raised", "exited"],
)
def test_a_failed_build_says_why_and_leaves_the_build_in_use(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], failure: BaseException, said: str
) -> None:
    source, target = _source(tmp_path), tmp_path / "cds-native"
    target.mkdir()
    assert build_native.build(source, target, _fake_compiler(source)) == 0
    before = _in_use(target, source)
    manifest = (target / native.MANIFEST).read_bytes()
    assert build_native.build(source, target, _fake_compiler(source, fail=failure)) == 1
    err = capfd.readouterr().err
    assert "compiler output the log keeps" in err
    assert said in err
    assert (target / native.MANIFEST).read_bytes() == manifest
    assert _in_use(target, source) == before
    assert [p.name for p in target.iterdir() if p.is_dir()] == [str(before)]


def _saved_and_restored(path: Path) -> None:
    """A checkout and back during the build: the old content again, saved a second later."""
    content, stat = path.read_bytes(), path.stat()
    path.write_text("X = 'another branch'\n")
    path.write_bytes(content)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(
    "edit",
    [lambda path: path.write_text("X = 'saved during the build'\n"), _saved_and_restored],
    ids=["edited", "edited-and-restored"],
)
def test_a_source_saved_during_the_build_fails_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], edit: Callable[[Path], None]
) -> None:
    """The build would otherwise claim a source it was not compiled from."""
    source, target = _source(tmp_path), tmp_path / "cds-native"
    target.mkdir()
    assert build_native.build(source, target, _fake_compiler(source, edit=edit)) == 1
    assert "a source changed during the build" in capfd.readouterr().err
    assert not (target / native.MANIFEST).exists()
    assert not [p for p in target.iterdir() if p.is_dir()]
