"""Terminal output for the tools: results on stdout, progress and problems on stderr.

Keeping progress on stderr lets ``--json`` output be piped. Colour only when the stream is a terminal
and ``NO_COLOR`` is unset (https://no-color.org), so logs and CI output stay plain text.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

logger = logging.getLogger(__name__)

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}


def wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass
class Step:
    """One progress line: started before a slow operation, finished with its outcome."""

    write: Callable[[str], None]
    failed_label: str
    started: float = field(default_factory=time.perf_counter)
    finished: bool = False

    def done(self, detail: str) -> None:
        ms = (time.perf_counter() - self.started) * 1000
        self.write(f"{detail} ({ms:.0f} ms)\n")
        self.finished = True

    def failed(self, detail: str) -> None:
        self.write(f"{self.failed_label}: {detail}\n")
        self.finished = True


class Console:
    """Where the tools write; streams default to the current ``sys.stdout``/``sys.stderr``."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        color: bool | None = None,
        quiet: bool = False,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color_out = wants_color(self.out) if color is None else color
        self.color_err = wants_color(self.err) if color is None else color
        self.quiet = quiet

    def style(self, text: str, *styles: str) -> str:
        return _paint(text, styles) if self.color_out else text

    def style_err(self, text: str, *styles: str) -> str:
        return _paint(text, styles) if self.color_err else text

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def err_write(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err_write(text + "\n")

    def warn(self, text: str) -> None:
        self.err_write(self.style_err("warning", "yellow", "bold") + f": {text}\n")

    def error(self, text: str) -> None:
        self.err_write(self.style_err("error", "red", "bold") + f": {text}\n")

    @contextmanager
    def step(self, label: str) -> Iterator[Step]:
        """``label ... <outcome> (N ms)`` on stderr; the label is shown before the work starts."""
        write = _discard if self.quiet else self.err_write
        write(f"  {label} ... ")
        step = Step(write, self.style_err("failed", "red"))
        try:
            yield step
        except BaseException:
            if not step.finished:
                step.failed("see below")
            raise
        if not step.finished:
            write("\n")


def _paint(text: str, styles: tuple[str, ...]) -> str:
    codes = ";".join(_CODES[s] for s in styles)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


def _discard(text: str) -> None:
    """Progress sink for ``--quiet``."""
