"""The status API: ``/status`` (JSON), ``/metrics`` (Prometheus text) and ``/`` (a page for people).

It serves the watch loop's own records from the same event loop, so a request costs no I/O.
Bound to 127.0.0.1 by default (inside the compose stack: published on the host's 127.0.0.1 only).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from orchestrator.policy import State

Snapshot = Callable[[], dict[str, Any]]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(snapshot: dict[str, Any]) -> str:
    """Prometheus exposition format, version 0.0.4."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    miners = snapshot["miners"]
    family("minerfleet_miner_state", "gauge", "1 for the state each miner is in, 0 for the others.")
    for m in miners:
        for state in State:
            value = 1 if m["state"] == state.value else 0
            out.append(f'minerfleet_miner_state{{miner="{_label(m["name"])}",state="{state.value}"}} {value}')
    family("minerfleet_restarts_total", "counter", "Automatic restarts since the watch started, by reason.")
    for m in miners:
        for reason, count in sorted(m["restarts_by_reason"].items()):
            out.append(
                f'minerfleet_restarts_total{{miner="{_label(m["name"])}",reason="{_label(reason)}"}} {count}'
            )
    probes = [(m["name"], m["last_probe"]) for m in miners if m["last_probe"]]
    family("minerfleet_probe_healthy", "gauge", "1 when the last stream probe was healthy.")
    for name, p in probes:
        out.append(f'minerfleet_probe_healthy{{miner="{_label(name)}"}} {1 if p["healthy"] else 0}')
    family("minerfleet_probe_ttft_seconds", "gauge", "Time to the first streamed chunk in the last probe.")
    for name, p in probes:
        if p["first_chunk_after"] is not None:
            out.append(
                f'minerfleet_probe_ttft_seconds{{miner="{_label(name)}"}} {p["first_chunk_after"]:.6f}'
            )
    family("minerfleet_probe_tokens_per_second", "gauge", "Estimated tokens/s (chars/4) in the last probe.")
    for name, p in probes:
        if p["tokens_per_s"] is not None:
            out.append(
                f'minerfleet_probe_tokens_per_second{{miner="{_label(name)}"}} {p["tokens_per_s"]:.3f}'
            )
    family("minerfleet_probe_chunks", "gauge", "Chunks streamed in the last probe.")
    for name, p in probes:
        out.append(f'minerfleet_probe_chunks{{miner="{_label(name)}"}} {p["chunks"]}')
    servers = snapshot.get("model_servers", [])
    family(
        "minerfleet_model_server_state", "gauge", "1 for the state each model server is in, 0 for the others."
    )
    for m in servers:
        for state in State:
            value = 1 if m["state"] == state.value else 0
            out.append(
                f'minerfleet_model_server_state{{server="{_label(m["name"])}",state="{state.value}"}} {value}'
            )
    family(
        "minerfleet_model_server_restarts_total",
        "counter",
        "Automatic restarts of each model server, by reason.",
    )
    for m in servers:
        for reason, count in sorted(m["restarts_by_reason"].items()):
            out.append(
                f'minerfleet_model_server_restarts_total{{server="{_label(m["name"])}",'
                f'reason="{_label(reason)}"}} {count}'
            )
    family("minerfleet_model_server_healthy", "gauge", "1 when the last GET /health answered 200.")
    for m in servers:
        if m["last_check"]:
            out.append(
                f'minerfleet_model_server_healthy{{server="{_label(m["name"])}"}} '
                f"{1 if m['last_check']['healthy'] else 0}"
            )
    return "\n".join(out) + "\n"


_COLORS = {
    "RUNNING": "#1a7f37",
    "STARTING": "#9a6700",
    "UNHEALTHY": "#bc4c00",
    "BACKOFF": "#bc4c00",
    "FATAL": "#cf222e",
    "STOPPED": "#57606a",
}


def page(snapshot: dict[str, Any]) -> str:
    rows = []
    for m in snapshot.get("model_servers", []):
        check = m["last_check"] or {}
        rows.append(
            "<tr>"
            f"<td>{html.escape(m['name'])}</td><td>model-server</td><td>{m['port']}</td>"
            f"<td style='color:{_COLORS.get(m['state'], '#000')};font-weight:600'>{m['state']}</td>"
            f"<td>{m['restarts']}</td><td>{html.escape(check.get('verdict', '-'))}</td>"
            f"<td>-</td><td>-</td><td>{html.escape(m['detail'] or m['reason'])}</td>"
            "</tr>"
        )
    for m in snapshot["miners"]:
        p = m["last_probe"] or {}
        ttft = "-" if p.get("first_chunk_after") is None else f"{p['first_chunk_after']:.2f}s"
        rate = "-" if p.get("tokens_per_s") is None else f"{p['tokens_per_s']:.1f}"
        why = m["detail"] or m["reason"]
        rows.append(
            "<tr>"
            f"<td>{html.escape(m['name'])}</td><td>{html.escape(m['backend'])}</td><td>{m['port']}</td>"
            f"<td style='color:{_COLORS.get(m['state'], '#000')};font-weight:600'>{m['state']}</td>"
            f"<td>{m['restarts']}</td><td>{html.escape(p.get('verdict', '-'))}</td>"
            f"<td>{ttft}</td><td>{rate}</td>"
            f"<td>{html.escape(why)}</td>"
            "</tr>"
        )
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>minerfleet</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}th{{background:#f6f8fa}}</style>
</head><body><h1>minerfleet</h1>
<p>runtime: {html.escape(snapshot["runtime"])} &middot; updated {updated} &middot;
<a href="/status">/status</a> &middot; <a href="/metrics">/metrics</a></p>
<table><tr><th>miner</th><th>backend</th><th>port</th><th>state</th><th>restarts</th><th>last probe</th>
<th>TTFC</th><th>tok/s~</th><th>reason</th></tr>
{"".join(rows)}
</table></body></html>
"""


def make_app(snapshot: Snapshot) -> Starlette:
    async def status(request: Request) -> Response:
        return JSONResponse(snapshot())

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(metrics_text(snapshot()), media_type="text/plain; version=0.0.4")

    async def index(request: Request) -> Response:
        return HTMLResponse(page(snapshot()))

    return Starlette(routes=[Route("/status", status), Route("/metrics", metrics), Route("/", index)])
