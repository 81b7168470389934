"""Compile the engine's hot modules with mypyc into the virtual environment (``make`` runs this).

The modules are listed in pyproject.toml (``[tool.cds-native] modules``). The C is generated and compiled
in a temporary directory; the extension modules go to a new directory of their own under
``<sys.prefix>/cds-native/``, and then a manifest (the SHA-256 of every file the build was made from, the
Python it is built for, the mypyc version, where each module is) replaces the previous one in one step.
The build before it is kept until the next, for a process that was loading it at that moment.
``cds_service.native`` loads a build only while every file still matches.

The sources are hashed and stamped before compiling and again after: a file saved during the build
fails it instead of publishing a build that claims a source it was not made from. Concurrent runs
(``make -j``, two terminals) take turns on a lock, and the later one finds the build current.

Run with the virtual environment's Python: ``.venv/bin/python scripts/build_native.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service import native  # noqa: E402

#: The name of the shared library that holds the compiled code: a module inside the package.
GROUP = "cds_service.native"

#: Compiles the sources (paths relative to the root) into the first directory, working in the second.
Compiler = Callable[[list[str], Path, Path], None]


def configured_modules(root: Path) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    modules = config["tool"]["cds-native"]["modules"]
    if not modules or not all(isinstance(m, str) and m.startswith("cds_service.") for m in modules):
        raise SystemExit("[tool.cds-native] modules: a list of cds_service module names")
    return list(modules)


def source_of(root: Path, module: str) -> str:
    relative = module.replace(".", "/") + ".py"
    if not (root / relative).is_file():
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


def current(target: Path) -> bool:
    """True when the build in ``target`` is in use for this source and was made by this mypyc."""
    if not native.plan(target, ROOT, {}).active:
        return False
    manifest = json.loads((target / native.MANIFEST).read_text(encoding="utf-8"))
    return bool(manifest.get("mypyc") == _mypy_version())


def build(root: Path, target: Path, compiler: Compiler = compile_to) -> int:
    """Compile the configured modules of the tree at ``root`` into a new directory under ``target`` and
    publish it; 1 when it failed, and then the build in use stays as it was. The list is read after the
    sources are first hashed, so it is the one the manifest's pyproject.toml holds."""
    before = native.inputs(root)
    stamps = _stamps(root, before)
    sources = [source_of(root, m) for m in configured_modules(root)]
    out = Path(tempfile.mkdtemp(prefix="build-", dir=target))
    out.chmod(0o755)  # readable by a service account other than the one that ran make, as the venv is
    published = False
    try:
        with tempfile.TemporaryDirectory(prefix="work-", dir=target) as tmp:
            log = Path(tmp) / "build.log"
            try:
                with _output_to(log):
                    compiler(sources, out, Path(tmp))
            except (Exception, SystemExit):  # mypyc exits after printing the type errors it found
                tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-80:]
                print("\n".join(tail), file=sys.stderr)
                traceback.print_exc()
                print("build_native: mypyc could not compile the engine (output above)", file=sys.stderr)
                return 1
        after = native.inputs(root)
        if after != before or _stamps(root, after) != stamps:
            print("build_native: a source changed during the build; run `make` again", file=sys.stderr)
            return 1
        files = {
            module_of(p.relative_to(out)): p.relative_to(target).as_posix() for p in sorted(out.rglob("*.so"))
        }
        previous = _directories_of(target)
        manifest = {
            "format": native.FORMAT,
            "python": native.python_tag(),
            "mypyc": _mypy_version(),
            "sources": before,
            "files": files,
        }
        staged = target / f"{native.MANIFEST}.new"
        staged.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(staged, target / native.MANIFEST)
        published = True
    finally:
        if not published:
            shutil.rmtree(out, ignore_errors=True)
    for entry in target.iterdir():  # older builds: nothing loads them any more
        if entry.is_dir() and entry.name not in {out.name, *previous}:
            shutil.rmtree(entry, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--if-stale", action="store_true", help="do nothing when the build is current (what make runs)"
    )
    args = parser.parse_args()
    target = native.build_dir()
    target.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # mypy finds the project's configuration (strict, the pydantic plugin) here
    with open(target / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if args.if_stale and current(target):
            print(f"build_native: current ({target})")
            return 0
        started = time.monotonic()
        if build(ROOT, target):
            return 1
    state = native.plan(target, ROOT, {})
    if not state.active:
        print(f"build_native: the new build is not usable: {state.reason}", file=sys.stderr)
        return 1
    print(f"build_native: {state.reason}, built in {time.monotonic() - started:.0f} s into {target}")
    return 0


def _stamps(root: Path, paths: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """Each input's modification time, size and inode: a file saved twice during the build (a checkout
    and back) has its old content again, but not its old stamp."""
    stamps = {}
    for relative in paths:
        stat = (root / relative).stat()
        stamps[relative] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return stamps


def _directories_of(target: Path) -> set[str]:
    """The build directories the current manifest points into (none when there is no readable one)."""
    try:
        manifest = json.loads((target / native.MANIFEST).read_text(encoding="utf-8"))
        return {Path(relative).parts[0] for relative in manifest["files"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return set()


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
