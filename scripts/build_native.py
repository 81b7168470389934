"""Compile the engine's hot modules with mypyc into the virtual environment (``make`` runs this).

The modules are listed in pyproject.toml (``[tool.cds-native] modules``). The C is generated and compiled
in a temporary directory; the extension modules and a manifest (the SHA-256 of every source compiled,
the Python they are built for, the mypyc version) go to ``<sys.prefix>/cds-native/``, replacing any
earlier build at once. ``cds_service.native`` loads them only while every source still matches.

Run with the virtual environment's Python: ``.venv/bin/python scripts/build_native.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import json
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service import native  # noqa: E402

#: The name of the shared library that holds the compiled code: a module inside the package.
GROUP = "cds_service.native"


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    modules = config["tool"]["cds-native"]["modules"]
    if not modules or not all(isinstance(m, str) and m.startswith("cds_service.") for m in modules):
        raise SystemExit("[tool.cds-native] modules: a list of cds_service module names")
    return list(modules)


def source_of(module: str) -> str:
    relative = module.replace(".", "/") + ".py"
    if not (ROOT / relative).is_file():
        raise SystemExit(f"[tool.cds-native] names {module}, but {relative} does not exist")
    return relative


def module_of(relative: Path) -> str:
    """``cds_service/engine/dates.cpython-311-x86_64-linux-gnu.so`` -> ``cds_service.engine.dates``."""
    name = relative.name
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if name.endswith(suffix):
            return ".".join((*relative.parent.parts, name[: -len(suffix)]))
    raise ValueError(f"not an extension module: {relative}")


def compile_to(sources: list[str], out: Path, temp: Path) -> None:
    """mypyc + setuptools' build_ext, as the ``mypyc`` command does, but built into ``out``."""
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    extensions = mypycify(sources, opt_level="3", group_name=GROUP, target_dir=str(temp / "c"))
    distribution = Distribution({"name": "cds-native", "ext_modules": extensions})
    command = distribution.get_command_obj("build_ext")
    command.build_lib = str(out)
    command.build_temp = str(temp / "obj")
    command.ensure_finalized()
    command.run()


def current(target: Path, sources: list[str]) -> bool:
    """True when the build in ``target`` compiled exactly ``sources``, as they are now, with this mypyc."""
    if not native.plan(target, ROOT, {}).active:
        return False
    manifest = json.loads((target / native.MANIFEST).read_text(encoding="utf-8"))
    return sorted(manifest["sources"]) == sorted(sources) and manifest.get("mypyc") == _mypy_version()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--if-stale", action="store_true", help="do nothing when the build is current (what make runs)"
    )
    args = parser.parse_args()
    sources = [source_of(m) for m in configured_modules()]
    target = native.build_dir()
    if args.if_stale and current(target, sources):
        print(f"build_native: current ({target})")
        return 0
    started = time.monotonic()
    os.chdir(ROOT)  # mypy finds the project's configuration (strict, the pydantic plugin) here
    with tempfile.TemporaryDirectory(prefix="cds-native-", dir=target.parent) as tmp:
        temp = Path(tmp)
        out = temp / "lib"
        log = temp / "build.log"
        try:
            with _output_to(log):
                compile_to(sources, out, temp)
        except BaseException:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-80:]
            print("\n".join(tail), file=sys.stderr)
            print("build_native: mypyc could not compile the engine (output above)", file=sys.stderr)
            return 1
        files = {module_of(p.relative_to(out)): str(p.relative_to(out)) for p in sorted(out.rglob("*.so"))}
        manifest = {
            "format": native.FORMAT,
            "python": native.python_tag(),
            "mypyc": _mypy_version(),
            "sources": {s: native.source_digest(ROOT / s) for s in sources},
            "files": files,
        }
        (out / native.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rename(temp / "previous")  # removed with the temporary directory
        out.rename(target)
    state = native.plan(target, ROOT, {})
    if not state.active:
        print(f"build_native: the new build is not usable: {state.reason}", file=sys.stderr)
        return 1
    print(f"build_native: {state.reason}, built in {time.monotonic() - started:.0f} s into {target}")
    return 0


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's and the compiler's output (file descriptors 1 and 2) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def _mypy_version() -> str:
    from mypy.version import __version__

    return str(__version__)


if __name__ == "__main__":
    raise SystemExit(main())
