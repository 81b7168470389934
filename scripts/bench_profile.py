"""Where one hook call's time goes, on the 210 KB benchmark request (in-process; no server needed).

1. Stages, timed one by one with the service's own functions (median of N calls): body parse, envelope,
   context, prefetch resolution, engine, cards, response serialisation. These are internal APIs: if one
   changes, this tool needs the same change (it is a diagnostic, not part of ``make bench``).
2. The whole ASGI app (middleware, dependencies, route, orchestrator) under pyinstrument: N requests
   through ``httpx.ASGITransport`` after the app's lifespan has run (so ``gc.freeze()`` happened as in
   production), printed as a flat list of self time and as a call tree.
3. ``--py-spy PATH``: the production setup instead (``cds-service serve --workers 2`` under wrk, c=10),
   both workers sampled by py-spy (``pip install --target /tmp/pyspy py-spy``); prints the functions
   with the most self and inclusive samples, so uvicorn/httptools and the thread pool are included.

    .venv/bin/python scripts/bench_profile.py [-n 400] [--html /tmp/profile.html]
    .venv/bin/python scripts/bench_profile.py --py-spy /tmp/pyspy/bin/py-spy [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_workloads as workloads


def _median_ms(fn: Callable[[], object], n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def _amedian_ms(fn: Callable[[], Awaitable[object]], n: int) -> float:
    await fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def stages(body: bytes, n: int) -> list[tuple[str, float]]:
    from cds_service.cards import CardContext, build_cards
    from cds_service.catalog import load_catalog
    from cds_service.config import Settings
    from cds_service.engine.dates import utc_today
    from cds_service.fhir.client import FhirClient, FhirLimits
    from cds_service.hookbody import decode_hook_body
    from cds_service.orchestrate import parse_context
    from cds_service.prefetch import fhir_access, resolve
    from cds_service.schemas import CdsResponse, HookRequest

    settings = Settings(env="development", auth="off")
    catalog = load_catalog(settings.rules_dir)
    engine = catalog.engine
    service = catalog.service("hip-weakness")
    now = datetime.now(UTC)
    today: date = utc_today(now)
    worth = engine.normaliser.worth_reading
    decoded = decode_hook_body(body, worth)
    request = HookRequest.model_validate(decoded.envelope)
    supplied = decoded.prefetch or {}
    context = parse_context(service.hook, request.context)
    async with httpx.AsyncClient() as http:
        fhir = FhirClient(
            http, FhirLimits(max_response_bytes=10**7, max_pages=5, max_resources=10**5, page_size=500)
        )
        access = fhir_access(request, allow_without_token=True, production=False)
        resolved = await resolve(service, supplied, request.context, fhir, access, 4.0)
        evaluation = engine.evaluate(resolved.resources, context.patientId, today, service.emit_pathways)
        ctx = CardContext(context.patientId, "http://127.0.0.1:8080")
        cards = build_cards(evaluation, catalog.cards, ctx)
        response = CdsResponse(cards=cards)
        out = [
            ("orjson.loads(body) (for comparison)", _median_ms(lambda: orjson.loads(body), n)),
            ("decode_hook_body (msgspec heads)", _median_ms(lambda: decode_hook_body(body, worth), n)),
            (
                "HookRequest.model_validate",
                _median_ms(lambda: HookRequest.model_validate(decoded.envelope), n),
            ),
            ("parse_context", _median_ms(lambda: parse_context(service.hook, request.context), n)),
            (
                "prefetch.resolve (all supplied)",
                await _amedian_ms(lambda: resolve(service, supplied, request.context, fhir, access, 4.0), n),
            ),
            ("Resolved.resources", _median_ms(lambda: resolved.resources, n)),
            (
                "engine.evaluate",
                _median_ms(
                    lambda: engine.evaluate(
                        resolved.resources, context.patientId, today, service.emit_pathways
                    ),
                    n,
                ),
            ),
            (
                "  of which normaliser.normalise",
                _median_ms(
                    lambda: engine.normaliser.normalise(resolved.resources, context.patientId, today), n
                ),
            ),
            ("build_cards", _median_ms(lambda: build_cards(evaluation, catalog.cards, ctx), n)),
            ("CdsResponse(cards).wire()", _median_ms(lambda: CdsResponse(cards=cards).wire(), n)),
            ("orjson.dumps(wire)", _median_ms(lambda: orjson.dumps(response.wire()), n)),
        ]
    return out


async def whole_app(body: bytes, n: int, html: Path | None) -> tuple[float, str, str]:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    from cds_service.config import Settings
    from cds_service.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(env="development", auth="off", data_dir=Path(tmp), log_level="WARNING")
        app = create_app(settings)
        headers = {"Content-Type": "application/json"}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
                for _ in range(30):
                    r = await client.post(workloads_path(), content=body, headers=headers)
                    r.raise_for_status()
                t0 = time.perf_counter()
                profiler = Profiler(interval=0.0002)
                profiler.start()
                for _ in range(n):
                    await client.post(workloads_path(), content=body, headers=headers)
                profiler.stop()
                per_call = (time.perf_counter() - t0) * 1000 / n
    flat = profiler.output(ConsoleRenderer(unicode=False, color=False, flat=True, show_all=False))
    tree = profiler.output_text(unicode=False, color=False, show_all=False)
    if html is not None:
        html.write_text(profiler.output_html())
    return per_call, flat, tree


def live(pyspy: str, body: bytes, seconds: float, top: int) -> None:
    """py-spy on both workers of the real service while wrk drives it at c=10."""
    import collections
    import os
    import subprocess

    import bench

    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "data").mkdir()
        body_path = tmp / "body.json"
        body_path.write_bytes(body)
        port = bench.free_port()
        env = {"CDS_ENV": "development", "CDS_AUTH": "off", "CDS_DATA_DIR": str(tmp / "data")}
        env["CDS_LOG_LEVEL"] = "WARNING"
        cmd = [str(bench.VENV_BIN / "cds-service"), "serve", "--workers", "2", "--port", str(port)]
        service = bench.start("service", cmd, port, env, tmp)
        try:
            bench.wait_ready(service, "/cds-services")
            gen = bench.ensure_wrk("auto")
            bench.run_load(gen, service, "warm-up", body_path, 10, 3)
            wrk = subprocess.Popen(
                [
                    gen.path,
                    "-t1",
                    "-c10",
                    f"-d{int(seconds) + 4}s",
                    "-s",
                    str(bench.LUA),
                    service.url + workloads_path(),
                ],
                env={**os.environ, "WRK_BODY": str(body_path)},
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)
            outs = []
            spies = []
            for pid in service.workers():
                out = tmp / f"spy-{pid}.txt"
                outs.append(out)
                cmd = [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
                cmd += ["--format", "raw", "--output", str(out), "--nonblocking", "--gil"]
                spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for spy in spies:
                spy.wait()
            stdout, _ = wrk.communicate()
            print(next((x for x in stdout.splitlines() if x.startswith("WRK_RESULT")), "wrk: no result"))
        finally:
            service.stop()
        selfs: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        stacks: collections.Counter[str] = collections.Counter()
        total = 0
        for out in outs:
            if not out.exists():
                continue
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                n = int(count)
                frames = [
                    f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                    for f in stack.split(";")
                ]
                total += n
                stacks[";".join(frames)] += n
                selfs[frames[-1]] += n
                for frame in set(frames):
                    incl[frame] += n
        print(f"\n== py-spy --gil, both workers: {total} samples holding the GIL (= Python CPU) ==")
        print("by stage (first matching marker in the stack):")
        stages: collections.Counter[str] = collections.Counter()
        for stack_key, n in stacks.items():
            stages[_stage(stack_key)] += n
        for name, n in stages.most_common():
            print(f"  {100 * n / total:5.1f} %  {name}")
        print("self time:")
        for frame, n in selfs.most_common(top):
            print(f"  {100 * n / total:5.1f} %  {frame}")
        print("inclusive time:")
        for frame, n in incl.most_common(top):
            print(f"  {100 * n / total:5.1f} %  {frame}")


STAGES = (
    ("audit writer thread (SQLite, off the event loop)", ("AuditWriter._run", "AuditWriter._write")),
    ("engine: normalise FHIR -> records", ("Normaliser.normalise",)),
    ("engine: rules", ("evaluate (evaluate.py)",)),
    ("cards (incl. fhir.resources ServiceRequest)", ("build_cards",)),
    ("body: read + decode (msgspec envelope, raw entries, heads)", ("decode_hook_body", "read_capped")),
    ("prefetch resolution", ("resolve (resolve.py)",)),
    ("audit submit on the request path (trace record)", ("AuditWriter.submit", "submit (")),
    ("orchestrator, other (envelope, context, log)", ("Orchestrator.call",)),
    ("response: wire() + orjson.dumps", ("call_service",)),
    ("FastAPI dependencies and thread-pool hops", ("solve_dependencies", "run_in_threadpool")),
    ("anyio worker threads", ("WorkerThread.run",)),
    ("FastAPI/Starlette routing and middleware", ("FastAPI.__call__",)),
    ("uvicorn + httptools (HTTP parsing, send)", ("httptools_impl",)),
)


def _stage(stack: str) -> str:
    for name, markers in STAGES:
        if any(m in stack for m in markers):
            return name
    return "event loop and other"


def workloads_path() -> str:
    return "/cds-services/hip-weakness"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=400, help="requests profiled (default 400)")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--top", type=int, default=40, help="lines of the flat profile printed")
    parser.add_argument(
        "--py-spy", dest="pyspy", help="py-spy executable: profile the real service under wrk"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="py-spy sampling time (default 15)")
    args = parser.parse_args()
    w = workloads.synthea_sized(date.today())
    print(f"workload: {w.name}, {w.resources} resources, {len(w.body):,} bytes\n")
    if args.pyspy:
        live(args.pyspy, w.body, args.seconds, args.top)
        return 0
    print("== stages (median ms per call, in-process) ==")
    for name, ms in asyncio.run(stages(w.body, 200)):
        print(f"  {name:36s} {ms:8.3f}")
    per_call, flat, tree = asyncio.run(whole_app(w.body, args.n, args.html))
    print(f"\n== whole app through ASGITransport: {per_call:.2f} ms per call (profiled) ==")
    print("\n".join(flat.splitlines()[: args.top]))
    print("\n== call tree ==")
    print(tree)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
