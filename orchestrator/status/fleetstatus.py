"""What ``/status`` serves, as typed records: the fleet, each unit, its last probe, what its metrics said.

The watch loop builds a :class:`FleetStatus` (:mod:`orchestrator.status.view`); the metrics, the status
page and ``orchestrator status`` read its fields. JSON is written only at the HTTP edge (``to_json``) and
read back only by the CLI and the benchmarks (``FleetStatus.from_json``), so the wire format is spelled
out once, here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, TypeVar

from orchestrator.policy import State
from orchestrator.probing.modelservers import ServerReport, ServerVerdict
from orchestrator.probing.reports import ProbeReport, Verdict

R = TypeVar("R", ProbeReport, ServerReport)


class Role(StrEnum):
    """What a unit under watch is."""

    miner = "miner"
    model_server = "model-server"


@dataclass(frozen=True, slots=True)
class Change:
    """One state change in a unit's history, at a wall-clock time."""

    at: float | None
    from_state: State
    to_state: State
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(data["at"], State(data["from"]), State(data["to"]), data["reason"], data["detail"])


@dataclass(frozen=True, slots=True)
class Where:
    """The node a unit's task runs on and the address it is reached at (runtimes that place units)."""

    node: str | None
    address: str | None


# --- what a unit's own /metrics said -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrafficPoint:
    """Requests and answers between two scrapes (the status page's small history)."""

    at: float
    requests: float
    answered: float


@dataclass(frozen=True, slots=True)
class Traffic:
    """One unit's scrapes as the orchestrator summed them; ``scraped_at`` None: never read."""

    metrics_url: str
    scraped_at: float | None
    error: str
    window: float

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(Traffic)}


# No validator request for this long (s): the status page and the alert rule say so (rules.yml).
NO_VALIDATOR_AFTER = 1800.0


@dataclass(frozen=True, slots=True)
class MinerTraffic(Traffic):
    """A miner's requests over the window (None: no scrape yet), by outcome, and per scrape."""

    requests: float | None = None
    answered: float | None = None  # done, or cut at the deadline with what was made
    answered_fraction: float | None = None  # over every request but blacklisted callers
    first_chunk_p90: float | None = None
    outcomes: Mapping[str, float] = field(default_factory=dict)  # over the window
    totals: Mapping[str, float] = field(default_factory=dict)  # since the miner started
    history: tuple[TrafficPoint, ...] = ()
    # Who asked, from the miner's ledger (validators apart from the fleet's probe; unitmetrics.py).
    validators: Mapping[str, float] = field(default_factory=dict)

    @property
    def validator_alarm(self) -> str:
        """Why the miner may be earning nothing, from what validators did ("": nothing to say)."""
        if self.validators.get("registered") == 0:
            return "deregistered: the subnet no longer lists this hotkey"
        silent = self.validators.get("silent_s")
        if silent is not None and silent >= NO_VALIDATOR_AFTER:
            return f"no validator request for {silent / 60:.0f} min (only the probe asks)"
        return ""

    @property
    def validators_line(self) -> str:
        """One line for the status page: validator requests in the last hour, hotkeys, last answer."""
        v = self.validators
        if not v:
            return "-"
        line = f"{v.get('requests_last_hour', 0):.0f}/h, {v.get('hotkeys_last_hour', 0):.0f} hotkeys"
        answered = v.get("last_answer_at") or 0.0
        if answered and self.scraped_at:
            line += f", answered {max(0.0, self.scraped_at - answered) / 60:.0f} min ago"
        if v.get("uid", -1) >= 0:
            line += f", uid {v['uid']:.0f}"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            **Traffic.to_json(self),
            "validators": dict(self.validators),
            "validators_line": self.validators_line,
            "validator_alarm": self.validator_alarm,
            "requests": self.requests,
            "answered": self.answered,
            "outcomes": dict(self.outcomes),
            "answered_fraction": self.answered_fraction,
            "first_chunk_p90": self.first_chunk_p90,
            "totals": dict(self.totals),
            "history": [asdict(p) for p in self.history],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MinerTraffic:
        return cls(
            **_common(data),
            requests=data.get("requests"),
            answered=data.get("answered"),
            answered_fraction=data.get("answered_fraction"),
            first_chunk_p90=data.get("first_chunk_p90"),
            outcomes=dict(data.get("outcomes") or {}),
            totals=dict(data.get("totals") or {}),
            history=tuple(TrafficPoint(**p) for p in data.get("history") or ()),
            validators=dict(data.get("validators") or {}),
        )


@dataclass(frozen=True, slots=True)
class ServerTraffic(Traffic):
    """A model server's figures from its own metrics (llama-server: requests processing, tokens...)."""

    figures: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**Traffic.to_json(self), **self.figures}  # the figures sit beside the common keys

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerTraffic:
        common = _common(data)
        return cls(**common, figures={k: v for k, v in data.items() if k not in common})


def _common(data: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: data[f.name] for f in fields(Traffic)}


# --- units -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """What the watch loop knows of one unit (a miner or a model server)."""

    name: str
    role: Role
    port: int
    state: State
    reason: str  # a policy Reason, or an exit's ``killed:SIG…``/``crash:exit-N``
    detail: str
    restarts: int
    restarts_by_reason: Mapping[str, int]
    last_exit_code: int | None
    backoff_remaining: float | None  # seconds until the next start (BACKOFF only)
    history: tuple[Change, ...]
    where: Where | None = None  # None: the runtime does not place units on nodes
    traffic: Traffic | None = None  # None: the unit's metrics are not read

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def why(self) -> str:
        """The reason, with its detail when there is one."""
        return self.reason + (f": {self.detail}" if self.detail else "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "role": self.role.value,
            "port": self.port,
            "state": self.state.value,
            "reason": self.reason,
            "detail": self.detail,
            "restarts": self.restarts,
            "restarts_by_reason": dict(self.restarts_by_reason),
            "last_exit_code": self.last_exit_code,
            "backoff_remaining": self.backoff_remaining,
            "history": [c.to_json() for c in self.history],
        }
        if self.where is not None:
            data.update(node=self.where.node, address=self.where.address)
        data["traffic"] = None if self.traffic is None else self.traffic.to_json()
        return data


class UnitFields(TypedDict):
    """The fields every unit's status has, gathered before the miner's or server's own are added."""

    name: str
    role: Role
    port: int
    state: State
    reason: str
    detail: str
    restarts: int
    restarts_by_reason: Mapping[str, int]
    last_exit_code: int | None
    backoff_remaining: float | None
    history: tuple[Change, ...]
    where: NotRequired[Where | None]
    traffic: NotRequired[Traffic | None]


def _unit(data: Mapping[str, Any], traffic: type[MinerTraffic] | type[ServerTraffic]) -> UnitFields:
    """The fields every unit has, read from its JSON."""
    return {
        "name": data["name"],
        "role": Role(data["role"]),
        "port": data["port"],
        "state": State(data["state"]),
        "reason": data["reason"],
        "detail": data["detail"],
        "restarts": data["restarts"],
        "restarts_by_reason": dict(data["restarts_by_reason"]),
        "last_exit_code": data["last_exit_code"],
        "backoff_remaining": data["backoff_remaining"],
        "history": tuple(Change.from_json(c) for c in data["history"]),
        "where": Where(data["node"], data.get("address")) if "node" in data else None,
        "traffic": None if data.get("traffic") is None else traffic.from_json(data["traffic"]),
    }


def _report_json(report: ProbeReport | ServerReport | None, at: float | None) -> dict[str, Any] | None:
    if report is None:
        return None
    data = report.as_dict()
    data.pop("completion", None)  # what the probe read is not served: only its length
    data["at"] = at
    return data


def _report(cls: type[R], data: Mapping[str, Any] | None) -> tuple[R | None, float | None]:
    if data is None:
        return None, None
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    values["verdict"] = (Verdict if cls is ProbeReport else ServerVerdict)(data["verdict"])
    return cls(**values), data.get("at")


@dataclass(frozen=True, slots=True)
class MinerStatus(UnitStatus):
    backend: str = ""
    hotkey: str = ""
    last_probe: ProbeReport | None = None  # without the completion it read
    last_probe_at: float | None = None  # wall clock

    def to_json(self) -> dict[str, Any]:
        return {
            **UnitStatus.to_json(self),
            "backend": self.backend,
            "hotkey": self.hotkey,
            "last_probe": _report_json(self.last_probe, self.last_probe_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MinerStatus:
        probe, at = _report(ProbeReport, data.get("last_probe"))
        return cls(
            **_unit(data, MinerTraffic),
            backend=data["backend"],
            hotkey=data["hotkey"],
            last_probe=probe,
            last_probe_at=at,
        )


@dataclass(frozen=True, slots=True)
class ServerStatus(UnitStatus):
    url: str = ""  # the health check's URL
    last_check: ServerReport | None = None
    last_check_at: float | None = None  # wall clock

    def to_json(self) -> dict[str, Any]:
        return {
            **UnitStatus.to_json(self),
            "url": self.url,
            "last_check": _report_json(self.last_check, self.last_check_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerStatus:
        check, at = _report(ServerReport, data.get("last_check"))
        return cls(**_unit(data, ServerTraffic), url=data["url"], last_check=check, last_check_at=at)


# --- the fleet -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """The watch loop's view of the whole fleet at one moment."""

    runtime: str
    adopted: bool  # the watch has read what already runs
    uptime: float  # seconds since the watch began
    state_file: str | None
    miners: tuple[MinerStatus, ...]
    model_servers: tuple[ServerStatus, ...] = ()
    # The fleet file changed under the watch (what changed); it decides nothing on failures meanwhile.
    fleet_changed: str | None = None
    # The last rolling update's progress (runtimes/rollout.py: state/rollout/status.json), if any.
    rollout: Mapping[str, Any] | None = None

    @property
    def units(self) -> Iterator[UnitStatus]:
        yield from self.miners
        yield from self.model_servers

    @property
    def placed(self) -> bool:
        """Whether the runtime places units on nodes (the swarm): then each unit says where it runs."""
        return any(u.where is not None for u in self.units)

    def miner(self, name: str) -> MinerStatus:
        return next(m for m in self.miners if m.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "adopted": self.adopted,
            "uptime": self.uptime,
            "state_file": self.state_file,
            "miners": [m.to_json() for m in self.miners],
            "model_servers": [s.to_json() for s in self.model_servers],
            "fleet_changed": self.fleet_changed,
            "rollout": None if self.rollout is None else dict(self.rollout),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetStatus:
        return cls(
            runtime=data["runtime"],
            adopted=data.get("adopted", False),
            uptime=data.get("uptime", 0.0),
            state_file=data.get("state_file"),  # not served before state files existed
            miners=tuple(MinerStatus.from_json(m) for m in data["miners"]),
            model_servers=tuple(ServerStatus.from_json(s) for s in data.get("model_servers", ())),
            fleet_changed=data.get("fleet_changed"),
            rollout=data.get("rollout"),
        )
