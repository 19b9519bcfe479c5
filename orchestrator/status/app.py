"""The status API: ``/status`` (JSON), ``/metrics`` (Prometheus), ``/targets`` and ``/scrape/<unit>`` (the
units' own metrics for a Prometheus), and ``/`` (a page for people).

It serves the watch loop's own records from the same event loop, so ``/status`` and ``/metrics`` cost
no I/O; ``/scrape/<unit>`` reads one unit's ``/metrics`` in a thread. Bound to 127.0.0.1 by default
(inside the compose stack: published on the host's 127.0.0.1 only).

The page is plain HTML and a little JavaScript, no build step: the first view is rendered here (it reads
without JavaScript), then the script fetches ``/status`` every few seconds and redraws the tables in
place, keeping a short history per miner for its sparkline.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from orchestrator.status.fleetstatus import (
    FleetStatus,
    MinerStatus,
    MinerTraffic,
    ServerStatus,
    ServerTraffic,
    UnitStatus,
)
from orchestrator.status.metrics import FleetMetrics
from orchestrator.status.metrics import metrics_text as metrics_text
from orchestrator.status.unitmetrics import UnitScraper, fetch, sd_targets

Snapshot = Callable[[], FleetStatus]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COLORS = {
    "RUNNING": "#1a7f37",
    "STARTING": "#9a6700",
    "UNHEALTHY": "#bc4c00",
    "BACKOFF": "#bc4c00",
    "FATAL": "#cf222e",
    "STOPPED": "#57606a",
}


_NOT_READ = MinerTraffic(metrics_url="", scraped_at=None, error="", window=0.0)  # every figure None


def with_traffic(status: FleetStatus, scraper: UnitScraper | None) -> FleetStatus:
    """The watch's status, each unit with what its own metrics say (``traffic``; None: not read)."""
    if scraper is None:
        return status
    return replace(
        status,
        miners=tuple(replace(m, traffic=scraper.summary(m.name)) for m in status.miners),
        model_servers=tuple(replace(s, traffic=scraper.summary(s.name)) for s in status.model_servers),
    )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _restarts(unit: UnitStatus) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(unit.restarts_by_reason.items()))
    return f"{unit.restarts}" + (f" ({reasons})" if reasons else "")


def _state(unit: UnitStatus) -> str:
    return f"<span class=state style='color:{_COLORS.get(unit.state, '#000')}'>{unit.state}</span>"


def _row(unit: UnitStatus, cells: list[str]) -> str:
    return f"<tr data-unit='{html.escape(unit.name)}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _miner_row(m: MinerStatus) -> str:
    p = m.last_probe
    t = m.traffic if isinstance(m.traffic, MinerTraffic) else _NOT_READ
    fraction = t.answered_fraction
    return _row(
        m,
        [
            html.escape(m.name),
            html.escape(m.backend),
            str(m.port),
            _state(m),
            html.escape(_restarts(m)),
            html.escape("-" if p is None else p.verdict),
            _fmt(None if p is None else p.first_chunk_after, ".2f", "s"),
            _fmt(t.requests, ".0f"),
            _fmt(None if fraction is None else 100 * fraction, ".0f", "%"),
            _fmt(t.first_chunk_p90, ".2f", "s"),
            "",
            html.escape(t.validators_line),
            html.escape(t.validator_alarm or m.detail or m.reason),
        ],
    )


def _server_row(s: ServerStatus) -> str:
    check = s.last_check
    figures = s.traffic.figures if isinstance(s.traffic, ServerTraffic) else {}
    return _row(
        s,
        [
            html.escape(s.name),
            str(s.port),
            _state(s),
            html.escape(_restarts(s)),
            html.escape("-" if check is None else check.verdict),
            _fmt(figures.get("requests_processing"), ".0f"),
            _fmt(figures.get("tokens_predicted_total"), ".0f"),
            html.escape(s.detail or s.reason),
        ],
    )


MINER_HEADER = (
    "miner",
    "backend",
    "port",
    "state",
    "restarts",
    "last probe",
    "probe TTFC",
    "requests 5m",
    "answered",
    "first chunk p90",
    "history",
    "validators (not the probe)",
    "reason",
)
SERVER_HEADER = ("model server", "port", "state", "restarts", "last check", "processing", "tokens", "reason")

# The page's script (plain JavaScript, shipped beside this module).
_SCRIPT = (Path(__file__).with_name("status.js")).read_text(encoding="utf-8")


def _held(status: FleetStatus) -> str:
    if not status.fleet_changed:
        return ""
    return html.escape(f"held: {status.fleet_changed}; no restarts until the watch runs on it")


def _rollout(status: FleetStatus) -> str:
    rollout = status.rollout or {}
    return html.escape(f"{rollout.get('kind', 'rollout')} ({rollout.get('state')}): {rollout.get('message')}")


def page(status: FleetStatus, refresh: float = 5.0) -> str:
    """The status page: the first view rendered here, refreshed in place from ``/status``."""
    miners = "".join(_miner_row(m) for m in status.miners)
    servers = "".join(_server_row(s) for s in status.model_servers)
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    script = _SCRIPT.replace("__COLORS__", json.dumps(_COLORS)).replace(
        "__REFRESH_MS__", str(int(refresh * 1000))
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>minerfleet</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}}
table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}}
th{{background:#f6f8fa}}.state{{font-weight:600}}p.note{{color:#57606a;font-size:.9em}}</style>
</head><body><h1>minerfleet</h1>
<p><span id="updated">runtime: {html.escape(status.runtime)}, updated {updated}</span> &middot;
<a href="/status">/status</a> &middot; <a href="/metrics">/metrics</a> &middot;
<a href="/targets">/targets</a></p>
<p id="held" style="color:#bc4c00"{"" if status.fleet_changed else " hidden"}>{_held(status)}</p>
<p id="rollout"{"" if status.rollout else " hidden"}>{_rollout(status)}</p>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in MINER_HEADER)}</tr></thead>
<tbody id="miners">{miners}</tbody></table>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in SERVER_HEADER)}</tr></thead>
<tbody id="servers">{servers}</tbody></table>
<p class="note">Requests, answered (done or cut at the deadline with what was made, over every request
but blacklisted callers) and first-chunk p90 come from each miner's own metrics over the last 5 minutes;
the history shows requests and answers per scrape.</p>
<script>{script}</script>
</body></html>
"""


def make_app(
    snapshot: Snapshot, metrics: FleetMetrics | None = None, scraper: UnitScraper | None = None
) -> Starlette:
    fleet_metrics = metrics or FleetMetrics(snapshot)

    def current() -> FleetStatus:
        return with_traffic(snapshot(), scraper)

    async def status(request: Request) -> Response:
        return JSONResponse(current().to_json())

    async def metrics_route(request: Request) -> Response:
        return Response(fleet_metrics.text(), media_type=CONTENT_TYPE)

    async def targets(request: Request) -> Response:
        endpoints = [] if scraper is None else list(scraper.endpoints)
        direct = request.query_params.get("direct") not in (None, "", "0", "false")
        return JSONResponse(sd_targets(endpoints, None if direct else request.url.netloc))

    async def scrape(request: Request) -> Response:
        name = request.path_params["unit"]
        endpoint = None if scraper is None else next((e for e in scraper.endpoints if e.name == name), None)
        if endpoint is None:
            return PlainTextResponse(f"no unit named {name!r}\n", status_code=404)
        try:
            text, content_type = await asyncio.to_thread(fetch, endpoint.url)
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            return PlainTextResponse(f"{name} at {endpoint.url}: {reason}\n", status_code=503)
        return Response(text, media_type=content_type)

    async def index(request: Request) -> Response:
        return HTMLResponse(page(current()))

    return Starlette(
        routes=[
            Route("/status", status),
            Route("/metrics", metrics_route),
            Route("/targets", targets),
            Route("/scrape/{unit}", scrape),
            Route("/", index),
        ]
    )
