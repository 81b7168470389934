"""Where a hook call's time goes under load, measured by throughput instead of by sampling.

py-spy (``bench_profile.py --py-spy``) samples the threads that hold the GIL. It cannot see work done
without the GIL: SQLite writing the audit batch, the kernel's share of an fsync. This script measures
what each stage costs by cutting the call short after it, on servers that are otherwise the service:

    ceiling   scripts/bench_ceiling.py: orjson.loads(body), a fixed card (make bench's ceiling)
    read      the service's hook route up to the body read (caller, media type, size limit), then the
              ceiling's fixed card
    decode    + decode_hook_body (msgspec envelope, raw entries, heads, the resources worth reading)
    answer    the whole call (envelope, context, prefetch, engine, cards, response) without recording
              it: Orchestrator.call(record=False), so no audit record and no card/prefetch metrics
    service   the service as deployed (`cds-service serve`), audit and metrics on

Each runs as its own 2-worker server, started through ``cds-service serve``'s own code (settings, logging,
metrics directory, one socket per worker); the rungs are the service's own app with its hook route's
handler swapped for the cut-short one, so routing, middleware and start-up are the service's, and the
script checks each rung answers as designed before measuring. The loads run interleaved (ABC..CBA), and
for each run the server's own CPU time (utime + stime of its processes, from /proc) is divided by the
requests answered: **CPU ms per request**, which does not depend on how much CPU wrk or a neighbour
took. A stage's cost is the difference between two rungs.

    make bench-ladder                                       # ~4 minutes; prints a markdown table
    .venv/bin/python scripts/bench_ladder.py --duration 4 --reps 1   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import Request, Response  # module level: the rung's handler annotations are resolved here
from fastapi.routing import APIRoute

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402
import bench_workloads as workloads  # noqa: E402

RUNGS = ("ceiling", "read", "decode", "answer", "service")
RUNG_ENV = "BENCH_LADDER_RUNG"
CARD_ENV = "BENCH_LADDER_CARD"
HOOK_ROUTE = "/cds-services/{service_id}"
TARGET_RATIO = bench.TARGET_RATIO_C10
JSON = {"Content-Type": "application/json"}


# -- the rung servers (imported by each uvicorn worker) ----------------------------------------------------


def create() -> Any:
    """The service's app with its hook route answered by the rung named in ``BENCH_LADDER_RUNG``."""
    from cds_service.api import hooks
    from cds_service.api.body import read_body
    from cds_service.api.deps import AppState, base_url, required_caller
    from cds_service.hookbody import decode_hook_body
    from cds_service.main import create_app

    rung = os.environ[RUNG_ENV]
    # The ceiling's card, as the parent wrote it: importing bench_ceiling here would run its
    # settle_memory() before the app exists, and the app's objects would then never be frozen.
    fixed = Path(os.environ[CARD_ENV]).read_bytes()

    async def cut_short(service_id: str, request: Request) -> Response:
        state: AppState = request.app.state.cds
        caller = await required_caller(request, state)
        raw = await read_body(request, state.settings.max_request_bytes)
        if rung == "decode":
            decode_hook_body(raw, state.orchestrator.engine.normaliser.worth_reading)
        elif rung == "answer":
            url = base_url(request, state.settings)
            outcome = await state.orchestrator.call(service_id, raw, caller, url, record=False)
            return Response(orjson.dumps(outcome.response.wire()), media_type="application/json")
        return Response(fixed, media_type="application/json")

    # The hook router's route replaced before the app includes it (FastAPI builds what it serves from it).
    served = [r for r in hooks.router.routes if isinstance(r, APIRoute) and r.path == HOOK_ROUTE]
    if len(served) != 1:
        raise SystemExit(f"bench_ladder: expected one {HOOK_ROUTE} route, found {len(served)}")
    hooks.router.routes.remove(served[0])
    hooks.router.add_api_route(HOOK_ROUTE, cut_short, methods=["POST"], response_class=Response)
    return create_app()


def serve(port: int) -> int:
    """Serve the rung exactly as ``cds-service serve`` serves the service (its settings, logging,
    metrics directory, one socket per worker), with ``create`` as the app factory."""
    import uvicorn

    from cds_service import cli

    service_config = uvicorn.Config.__init__

    def rung_config(self: uvicorn.Config, app: Any, *args: Any, **kwargs: Any) -> None:
        rung_app = "bench_ladder:create" if app == "cds_service.main:create_app" else app
        service_config(self, rung_app, *args, **kwargs)

    uvicorn.Config.__init__ = rung_config  # type: ignore[method-assign]
    return cli.main(["serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)])


# -- the benchmark -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One load run (``make bench``'s own result) and the server's CPU time (all its processes) during it."""

    load: bench.LoadResult
    cpu_ms: float

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_ms / self.load.requests


def start(rung: str, tmp: Path) -> bench.Server:
    port = bench.free_port()
    data = tmp / f"data-{rung}"
    data.mkdir()
    env = {"CDS_ENV": "development", "CDS_AUTH": "off", "CDS_DATA_DIR": str(data), "CDS_LOG_LEVEL": "WARNING"}
    if rung == "ceiling":
        command = [bench.PYTHON, str(SCRIPTS / "bench_ceiling.py"), "--port", str(port), "--workers", "2"]
    elif rung == "service":
        command = [str(bench.VENV_BIN / "cds-service"), "serve", "--workers", "2"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        env[RUNG_ENV], env[CARD_ENV] = rung, str(tmp / "card.json")
        command = [bench.PYTHON, str(SCRIPTS / "bench_ladder.py"), "--serve", str(port)]
    return bench.start(rung, command, port, env, tmp)


def measure(gen: bench.LoadGen, server: bench.Server, body: Path, conc: int, seconds: float) -> Run:
    before = bench._tree_jiffies(server.process.pid)
    result = bench.run_load(gen, server, "ladder", body, conc, seconds)
    cpu_ms = (bench._tree_jiffies(server.process.pid) - before) * 1000 / bench.CLK_TCK
    if result.error_count:
        raise SystemExit(f"bench_ladder: {server.name} answered {result.errors}; see {server.log}")
    return Run(result, cpu_ms)


def report(runs: dict[str, list[Run]], conc: int) -> str:
    """A markdown table: each rung's throughput, CPU per request, and the CPU it adds to the rung above."""
    cpu = {rung: statistics.mean(r.cpu_per_request for r in reps) for rung, reps in runs.items()}
    rps = {rung: statistics.mean(r.load.rps for r in reps) for rung, reps in runs.items()}
    lines = [
        "| rung | req/s | CPU ms per request | added by this stage | p50 ms | p99 ms (worse rep) |",
        "|---|---|---|---|---|---|",
    ]
    above: str | None = None
    for rung, reps in runs.items():
        added = f"{cpu[rung] - cpu[above]:+.2f}" if above is not None else ""
        above = None if rung == "ceiling" else rung  # "read" starts the service's own ladder
        lines.append(
            f"| {rung} | {rps[rung]:,.0f} | {cpu[rung]:.2f} | {added} "
            f"| {statistics.mean(r.load.p50_ms for r in reps):.1f} | {max(r.load.p99_ms for r in reps):.1f} |"
        )
    budget = cpu["ceiling"] / TARGET_RATIO
    lines += [
        "",
        f"c={conc}; service/ceiling throughput {rps['service'] / rps['ceiling']:.2f}. Both share the same "
        f"cores, so throughput follows CPU per request: {TARGET_RATIO} x the ceiling's throughput means at "
        f"most {cpu['ceiling']:.2f} / {TARGET_RATIO} = {budget:.2f} ms per request; the service uses "
        f"{cpu['service']:.2f}.",
    ]
    return "\n".join(lines)


def answer(server: bench.Server, body: bytes) -> bytes:
    """The rung's answer to the workload (200 expected)."""
    r = httpx.post(server.url + bench.SERVICE_PATH, content=body, headers=JSON, timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"bench_ladder: {server.name} answered {r.status_code}; see {server.log}")
    return r.content


def check_rungs(answers: dict[str, bytes]) -> None:
    """Each rung answers what it should, else its figure would be wrong: the cut-short rungs exactly the
    ceiling's fixed card; ``answer`` the service's cards (the same but for each card's fresh uuids)."""

    def cards(raw: bytes) -> list[tuple[str, str]]:
        return [(c["summary"], c["detail"]) for c in orjson.loads(raw)["cards"]]

    wrong = [rung for rung in ("read", "decode") if answers[rung] != answers["ceiling"]]
    if answers["answer"] == answers["ceiling"] or cards(answers["answer"]) != cards(answers["service"]):
        wrong.append("answer")
    if wrong:
        raise SystemExit(f"bench_ladder: rung(s) {', '.join(wrong)} did not answer as designed")


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("--duration", type=float, default=8.0, help="seconds per load run (default 8)")
    cli.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    cli.add_argument("--concurrency", type=int, default=10, help="connections (default 10)")
    cli.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    cli.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # a rung's server
    args = cli.parse_args(argv)
    if args.serve:
        return serve(args.serve)

    gen = bench.ensure_wrk(args.loadgen)
    bench.wait_for_quiet(15.0, 60.0)
    workload = workloads.synthea_sized(dt.date.today())
    servers: list[bench.Server] = []
    with tempfile.TemporaryDirectory(prefix="cds-ladder-") as tmpdir, bench.servers_stopped(servers):
        tmp = Path(tmpdir)
        body = tmp / "body.json"
        body.write_bytes(workload.body)
        from bench_ceiling import CARD  # here, not at the top: the rungs' workers import this module

        (tmp / "card.json").write_bytes(orjson.dumps(CARD))
        servers += [start(rung, tmp) for rung in RUNGS]
        answers: dict[str, bytes] = {}
        for server in servers:
            bench.wait_ready(server, "/" if server.name == "ceiling" else "/healthz")
            answers[server.name] = answer(server, workload.body)
            bench.run_load(gen, server, "warm-up", body, args.concurrency, 3.0)
        check_rungs(answers)
        bench.log(f"{args.reps} x {len(RUNGS)} runs of {args.duration:g} s at c={args.concurrency}")
        runs: dict[str, list[Run]] = {rung: [] for rung in RUNGS}
        for rep in range(args.reps):
            for server in servers if rep % 2 == 0 else reversed(servers):
                runs[server.name].append(measure(gen, server, body, args.concurrency, args.duration))
    print(f"workload: {workload.name}, {workload.resources} resources, {len(workload.body):,} bytes")
    print(report(runs, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
