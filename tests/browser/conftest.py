"""A real browser in the suite: Playwright for Python driving Debian's Chromium, against the service run
by uvicorn (``cds-service serve``) on a free port, with every request off the machine blocked.

- Chromium comes from Debian (``apt-get install chromium``, as root or with ``sudo -n``) when
  ``/usr/bin/chromium`` is missing; never a browser build downloaded by a tool (no ``playwright install``).
- Every request the page makes to anything but 127.0.0.1/localhost is aborted and recorded; a test that
  finishes with one recorded fails: the pages must work on a hospital network without internet access.
- On failure a screenshot of the page is kept under ``test-artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright

from tests.ops.service_process import AUDIT_TOKEN, ServiceProcess, start_service
from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: As root Chromium needs --no-sandbox; the background-networking flags keep the browser itself from
#: calling Google's hosts at start (the machine's closed network refuses them, many at a time).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
__all__ = ["AUDIT_TOKEN", "Blocked"]


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when it is missing (root, or sudo without a password)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        pytest.fail("Chromium is missing and apt-get cannot run: install Debian's chromium package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(
            [*prefix, *command], env=env, capture_output=True, text=True, timeout=1200, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if not CHROMIUM.exists():
        pytest.fail("apt-get installed chromium but /usr/bin/chromium is missing")
    return CHROMIUM


class Blocked(list[str]):
    """The requests a page tried to send off the machine (aborted)."""


# Module scope, not session: Playwright's sync API keeps its event loop running in this thread while it
# is open, and the rest of the suite runs its own loops (anyio, asyncio.run) after these tests.
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service as deployed: ``cds-service serve`` (uvicorn), no EHR auth (``make run``'s mode), the
    audit token set."""
    running = start_service(tmp_path_factory.mktemp("browser") / "data")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = ensure_chromium()
    launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def blocked() -> Blocked:
    return Blocked()


@pytest.fixture
def context(browser: Browser, blocked: Blocked) -> Iterator[BrowserContext]:
    """A fresh browser profile whose requests off the machine are aborted and recorded."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_local)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext, blocked: Blocked, request: pytest.FixtureRequest) -> Iterator[Page]:
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    assert not blocked, f"requests off the machine (aborted): {blocked[:5]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so the ``page`` fixture knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
