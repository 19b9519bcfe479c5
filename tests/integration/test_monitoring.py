"""Monitoring end to end: a running fleet (echo miners and a llama-server model server under a real
supervisord, the real `python -m orchestrator watch`), scraped by a real Prometheus (Debian's) through the
orchestrator's /targets, checked by promtool, and its status page opened in headless Chromium.

Debian's prometheus and chromium come from scripts/test-deps.sh (make test runs it); without them these
tests are skipped with that fix. Nothing here asserts on time: every wait polls for a state, with a
generous bound only so that a broken fleet fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.local import llama_server_binary
from orchestrator.render.prometheus import prometheus_config
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.fleets import make_key, make_project
from tests.helpers import GGUF, ROOT, free_port, free_ports, supervisord, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.model]

RULES = ROOT / "config/prometheus/rules.yml"
DONE_A, DONE_B = 5, 3  # answered requests sent to each echo miner
VALIDATORS = ("v1", "v2")


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is missing: run `bash scripts/test-deps.sh` as root (make test does)")
    return path


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()


def _poll(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 0.5) -> Any:
    """``check()``'s first truthy result; AssertionError naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {str(last)[:2000]}")


@dataclass
class Fleet:
    project: Path
    status: int  # the status API's port
    miners: dict[str, tuple[int, int]]  # name -> (axon port, metrics port)
    server: str  # the model server's unit name

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.status}"

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(_get(f"{self.api}/status"))
        return data


def _fleet_file(ports: dict[str, int], validators: list[str]) -> str:
    # probe.interval is long: after the probes that make the miners RUNNING, only the test's own
    # requests reach them, so their counters are exactly what the test sent (plus the recorded start).
    return f"""
    network: local
    wallet_path: ./wallets
    probe: {{wallet: probe, hotkey: default, timeout: 5, interval: 3600, prompt: "are you there"}}
    supervisor: {{port: {ports["sup"]}}}
    status_api: {{port: {ports["status"]}}}
    models: {{gemma: {{gguf: gemma-3-270m-q4_k_m}}}}
    model_servers:
      gemma: {{model: gemma, port: {ports["server"]}, slots: 2, ctx_per_slot: 256, n_threads: 1}}
    defaults: {{wallet: fleet, backend: echo, warmup: false, allowed_hotkeys: {json.dumps(validators)}}}
    miners:
      - {{name: echo-a, hotkey: echo-a, axon_port: {ports["a"]}, metrics_port: {ports["ma"]}}}
      - {{name: echo-b, hotkey: echo-b, axon_port: {ports["b"]}, metrics_port: {ports["mb"]}}}
    """


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not GGUF.exists():
        pytest.fail(f"{GGUF} is missing: run `make model` (make test does it)")
    llama_server = llama_server_binary()
    names = ("sup", "status", "server", "a", "b", "ma", "mb")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    project = tmp_path_factory.mktemp("monitoring") / "project"
    # Two validators the miners admit (network local: by allowed_hotkeys), beside the fleet's probe.
    validators = [make_key(project / "validators", "validator", name) for name in VALIDATORS]
    make_project(project, _fleet_file(ports, validators), model=False)
    (project / "models").mkdir(exist_ok=True)
    (project / "models" / GGUF.name).symlink_to(GGUF.resolve())
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "render", "--config", str(project / "config/miners.yaml"),
         "--project-dir", str(project), "--python", sys.executable, "--llama-server", llama_server],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    log = (project / "watch.log").open("wb")
    # The miners run this checkout's code (supervisord passes its environment on to them).
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    with supervisord(project / "config/generated/supervisord.conf", ports["sup"]):
        # Serving before the watch adopts them: its first probe is then healthy (the next is an hour away).
        for name in ("a", "b", "ma", "mb"):
            wait_for_port(ports[name], 120)
        _poll("llama-server loaded", lambda: _get(f"http://127.0.0.1:{ports['server']}/health"))
        watch = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "watch", "--config", str(project / "config/miners.yaml"),
             "--project-dir", str(project), "--runtime", "supervisor"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            wait_for_port(ports["status"], 120, watch)
            fleet = Fleet(
                project,
                ports["status"],
                {"echo-a": (ports["a"], ports["ma"]), "echo-b": (ports["b"], ports["mb"])},
                server="",
            )

            def running() -> dict[str, Any] | None:
                snap = fleet.snapshot()
                units = [*snap["miners"], *snap["model_servers"]]
                if all(
                    u["state"] == "RUNNING" and (u.get("last_probe") or u.get("last_check")) for u in units
                ):
                    return snap
                assert not any(u["state"] == "FATAL" for u in units), units
                raise ValueError({u["name"]: (u["state"], u["reason"], u["detail"]) for u in units})

            snap = _poll("every unit RUNNING", running)
            fleet.server = snap["model_servers"][0]["name"]
            yield fleet
        finally:
            watch.terminate()
            watch.wait(30)
            log.close()
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
            sys.stderr.write((project / "watch.log").read_text(errors="replace")[-3000:])


async def _traffic(fleet: Fleet) -> None:
    """DONE_A and DONE_B answered streams, one request too long for echo-a (413), signed by the probe's
    hotkey (the one the miners accept on network local)."""
    from bittensor_wallet import Wallet

    from orchestrator.render import read_ss58

    wallets = fleet.project / "wallets"
    dendrite = make_dendrite(Wallet(name="probe", hotkey="default", path=str(wallets)))
    try:
        for name, count in (("echo-a", DONE_A), ("echo-b", DONE_B)):
            port = fleet.miners[name][0]
            target = axon_info("127.0.0.1", port, read_ss58(wallets / f"fleet/hotkeys/{name}"))
            for i in range(count):
                result = await stream_once(dendrite, target, make_synapse("prompting", f"hello {i}"), 10)
                assert result.status_code == 200 and result.completion, result
        target = axon_info(
            "127.0.0.1", fleet.miners["echo-a"][0], read_ss58(wallets / "fleet/hotkeys/echo-a")
        )
        too_long = make_synapse("prompting", "x" * 40_000)  # over limits.max_prompt_chars (32000)
        result = await stream_once(dendrite, target, too_long, 10)
        assert result.status_code == 413, result
    finally:
        await dendrite.aclose_session()


def _miner_totals(fleet: Fleet, name: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    text = _get(f"http://127.0.0.1:{fleet.miners[name][1]}/metrics")
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "minerfleet_miner_requests_total":
                totals[s.labels["outcome"]] = totals.get(s.labels["outcome"], 0) + s.value
    return totals


@pytest.fixture(scope="module")
def traffic(fleet: Fleet) -> dict[str, dict[str, float]]:
    """The fleet after the test's requests: each miner's request totals before and after."""
    before = {name: _miner_totals(fleet, name) for name in fleet.miners}
    asyncio.run(_traffic(fleet))
    after = {name: _miner_totals(fleet, name) for name in fleet.miners}
    return {"before_a": before["echo-a"], "after_a": after["echo-a"], "before_b": before["echo-b"]}


def test_the_miners_count_what_they_answered(fleet: Fleet, traffic: dict[str, dict[str, float]]) -> None:
    before, after = traffic["before_a"], traffic["after_a"]
    assert after["done"] - before.get("done", 0) == DONE_A
    assert after["too_long"] - before.get("too_long", 0) == 1


def test_a_real_prometheus_scrapes_the_fleet_through_the_orchestrator(
    fleet: Fleet, traffic: dict[str, dict[str, float]], tmp_path: Path
) -> None:
    prometheus = _need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        prometheus_config(
            f"127.0.0.1:{fleet.status}", [str(RULES)], project="test", interval="1s", sd_refresh="1s"
        )
    )
    subprocess.run([_need("promtool"), "check", "config", str(config)], check=True, capture_output=True)
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, 60, server)

        def query(expr: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            data = json.loads(_get(url))
            assert data["status"] == "success", data
            result: list[dict[str, Any]] = data["data"]["result"]
            return result

        def value(expr: str) -> float | None:
            result = query(expr)
            return float(result[0]["value"][1]) if result else None

        # Every unit was discovered through /targets and is up.
        ups = _poll(
            "every target up",
            lambda: (r := query("up")) and len(r) == 4 and all(x["value"][1] == "1" for x in r) and r,
        )
        assert {x["metric"].get("unit", "orchestrator") for x in ups} == {
            "orchestrator", "echo-a", "echo-b", fleet.server,
        }  # fmt: skip
        done_a = traffic["after_a"]["done"]
        _poll(
            f"echo-a's done counter at {done_a}",
            lambda: value('sum(minerfleet_miner_requests_total{miner="echo-a",outcome="done"})') == done_a,
        )
        assert (
            value('sum(minerfleet_miner_requests_total{miner="echo-a",outcome="too_long"})')
            == (traffic["after_a"]["too_long"])
        )
        assert value('sum(minerfleet_miner_requests_total{miner="echo-b",outcome="done"})') == (
            traffic["before_b"].get("done", 0) + DONE_B
        )
        # The orchestrator's own families, and llama-server's, through the same configuration.
        assert value('minerfleet_miner_state{miner="echo-a",state="RUNNING"}') == 1
        assert value(f'count(llamacpp:requests_processing{{server="{fleet.server}"}})') == 1
        rules = json.loads(_get(f"http://127.0.0.1:{port}/api/v1/rules"))
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {"MinerDown", "MinerFatal", "MinerAnswersTooFew", "ModelServerDown"} <= names
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_promtool_accepts_every_exporter(fleet: Fleet, traffic: dict[str, dict[str, float]]) -> None:
    promtool = _need("promtool")
    urls = [f"http://127.0.0.1:{metrics}/metrics" for _, metrics in fleet.miners.values()]
    urls += [f"{fleet.api}/metrics", f"{fleet.api}/scrape/echo-a"]
    for url in urls:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=_get(url), capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, (url, checked.stdout, checked.stderr)


def test_the_status_page_shows_every_unit_with_its_counts(
    fleet: Fleet, traffic: dict[str, dict[str, float]], tmp_path: Path
) -> None:
    chromium = _need("chromium")
    done_a = traffic["after_a"]["done"]
    # The orchestrator reads the miners' metrics every few seconds: wait until it has the traffic.
    _poll(
        "the status API to count echo-a's requests",
        lambda: (
            next(m for m in fleet.snapshot()["miners"] if m["name"] == "echo-a")["traffic"]["answered"]
            == done_a
        ),
    )
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--window-size=1500,560",
    ]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", f"{fleet.api}/"], capture_output=True, text=True, timeout=180
    ).stdout
    shot = tmp_path / "status-page.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", f"{fleet.api}/"], capture_output=True, timeout=180
    )
    assert shot.is_file() and shot.stat().st_size > 1000, "no screenshot"
    # The script ran: it replaced the server-rendered line with its own summary from /status.
    assert "miners running" in dom, dom[:3000]
    rows = _rows(dom)
    assert set(rows) == {"echo-a", "echo-b", fleet.server}, rows
    a = rows["echo-a"]
    assert a[3] == "RUNNING" and a[5] == "healthy", a
    assert float(a[7]) == traffic["after_a"]["done"] + traffic["after_a"]["too_long"], a  # requests 5m
    assert a[8] == f"{100 * done_a / float(a[7]):.0f}%", a  # answered
    assert a[9].endswith("s") and a[9] != "-", a  # first-chunk p90
    assert "<svg" in dom  # the history
    assert rows[fleet.server][2] == "RUNNING", rows[fleet.server]


def _rows(dom: str) -> dict[str, list[str]]:
    """Each table row's cell texts, by its first cell."""
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag == "td":
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag == "td" and self.cell is not None and self.rows:
                self.rows[-1].append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(dom)
    return {row[0]: row for row in parser.rows if row}


def test_promtool_accepts_the_rules_and_the_rendered_configurations(tmp_path: Path) -> None:
    promtool = _need("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0 and "9 rules found" in checked.stdout, checked.stdout + checked.stderr
    host = tmp_path / "host.yml"
    host.write_text(
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "prometheus-config"], cwd=ROOT, check=True,
            capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    for config in (host, ROOT / "config/generated/prometheus.yml"):
        checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, (config, checked.stdout, checked.stderr)


def test_validators_are_counted_apart_from_the_probe(fleet: Fleet) -> None:
    """Two validator hotkeys and the probe ask echo-b: its metrics and /status tell the two kinds apart."""
    from bittensor_wallet import Wallet

    from orchestrator.render import read_ss58

    port = fleet.miners["echo-b"][0]
    target = axon_info("127.0.0.1", port, read_ss58(fleet.project / "wallets/fleet/hotkeys/echo-b"))

    def counts() -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(
            _get(f"http://127.0.0.1:{fleet.miners['echo-b'][1]}/metrics")
        ):
            for s in family.samples:
                if s.name == "minerfleet_miner_requests_total" and s.labels["outcome"] == "done":
                    totals[s.labels["caller"]] = totals.get(s.labels["caller"], 0) + s.value
                elif s.name.startswith("minerfleet_miner_validator_") or s.name.startswith(
                    "minerfleet_miner_probe_"
                ):
                    totals[s.name] = s.value
        return totals

    before = counts()

    async def ask() -> None:
        keys = [("validators", "validator", v) for v in ("v1", "v2", "v1")]
        keys.append(("wallets", "probe", "default"))
        for folder, wallet, hotkey in keys:
            dendrite = make_dendrite(Wallet(name=wallet, hotkey=hotkey, path=str(fleet.project / folder)))
            try:
                result = await stream_once(dendrite, target, make_synapse("prompting", f"from {hotkey}"), 10)
                assert result.status_code == 200 and result.completion == f"from {hotkey}", result
            finally:
                await dendrite.aclose_session()

    asyncio.run(ask())
    after = counts()
    assert after["validator"] - before.get("validator", 0) == 3
    assert after["probe"] - before.get("probe", 0) == 1
    assert after["minerfleet_miner_validator_requests_last_hour"] - before.get(
        "minerfleet_miner_validator_requests_last_hour", 0) == 3  # fmt: skip
    assert after["minerfleet_miner_validator_hotkeys_last_hour"] == 2

    def seen() -> dict[str, Any] | None:
        miner = next(m for m in fleet.snapshot()["miners"] if m["name"] == "echo-b")
        validators = (miner.get("traffic") or {}).get("validators") or {}
        return miner if validators.get("hotkeys_last_hour") == 2 else None

    miner = _poll("/status showing echo-b's validators", seen, timeout=60)
    traffic = miner["traffic"]
    assert traffic["validators"]["requests_last_hour"] >= 3 and traffic["validators"]["last_answer_at"] > 0
    assert traffic["validators_line"].startswith(
        f"{traffic['validators']['requests_last_hour']:.0f}/h, 2 hotkeys"
    )
    assert traffic["validator_alarm"] == ""
    page = _get(f"{fleet.api}/")
    assert "validators (not the probe)" in page
