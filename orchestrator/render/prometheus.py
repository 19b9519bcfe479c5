"""``config/generated/prometheus.yml``: the monitoring profile's Prometheus, scraping the whole fleet.

Prometheus needs one address: the orchestrator's status API. It scrapes the orchestrator's own
``/metrics`` and discovers every miner and model server from ``/targets`` (Prometheus HTTP service
discovery), each scraped through the orchestrator (``/scrape/<unit>``), which reaches them on the compose
network (or on the host under supervisord). The same function writes the file a host Prometheus can use
(``python -m orchestrator prometheus-config``), with the address it reaches the status API at.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.fleet.load import LoadedFleet
from orchestrator.render.compose import GENERATED_DIR, ORCHESTRATOR

PROMETHEUS_FILE = GENERATED_DIR / "prometheus.yml"
RULES_DIR = Path("config/prometheus")
CONTAINER_RULES = "/etc/minerfleet/rules"  # config/prometheus, mounted read-only
JOB_ORCHESTRATOR = "minerfleet-orchestrator"
JOB_UNITS = "minerfleet"


def prometheus_config(
    status_address: str,
    rule_files: list[str],
    *,
    project: str,
    interval: str = "15s",
    sd_refresh: str = "30s",
) -> str:
    """A Prometheus configuration scraping the orchestrator at ``status_address`` (host:port) and every
    unit it lists at ``/targets``."""
    config = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"fleet": project},
        },
        "rule_files": rule_files,
        "scrape_configs": [
            {"job_name": JOB_ORCHESTRATOR, "static_configs": [{"targets": [status_address]}]},
            {
                "job_name": JOB_UNITS,
                "http_sd_configs": [
                    {"url": f"http://{status_address}/targets", "refresh_interval": sd_refresh}
                ],
            },
        ],
    }
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def render_prometheus(loaded: LoadedFleet, header: str) -> str:
    """The monitoring profile's configuration (inside the compose network)."""
    address = f"{ORCHESTRATOR}:{loaded.fleet.status_api.port}"
    return header + prometheus_config(address, [f"{CONTAINER_RULES}/*.yml"], project=loaded.fleet.project)
