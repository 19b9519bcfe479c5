"""A rolling update on Docker Swarm: ``python -m orchestrator rollout --runtime swarm --manager ENGINE``.

A ``docker stack deploy`` of the whole file updates every changed service at once: each unit is a
service of its own, so Swarm's ``update_config`` (``parallelism``, ``order``) orders the tasks of one
service, not the services of a stack. The rollout therefore deploys a part of the stack at a time
(docs/ARCHITECTURE.md, "Rolling updates"):

- prepare: the nodes' labels and images (as ``swarm up``), then the stack without its miners: model
  servers and the orchestrator are applied as Swarm applies them; services of miners no longer in the
  fleet file are removed;
- changed: a miner whose service's ``minerfleet.revision`` label differs from the rendered one
  (orchestrator/runtimes/swarm/stack.py), or that has no running task;
- replace: the stack with the rest and this batch's miners, so only they change; Swarm stops the old
  task first (``update_config``: ``order: stop-first``), and the call returns once the new task runs,
  fails, or is not coming (a change that needs no new task); the rollout's stream probe, at the node's
  address where the task runs, then gates the batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.reports import ProbeTarget
from orchestrator.runtimes.engine import engine_client, parse_time
from orchestrator.runtimes.swarm.deploy import (
    STACK_LABEL,
    annotated,
    deploy_env,
    label_nodes,
    load_images,
    needed_images,
    prune_replaced_keys,
    stack_deploy,
)
from orchestrator.runtimes.swarm.runtime import node_location, unit_of
from orchestrator.runtimes.swarm.stack import REVISION_LABEL, only, revisions

POLL = 0.5
_RUNNING = frozenset({"starting", "running"})
_ENDED = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


class SwarmUpdater:
    """The ``Updater`` (runtimes/spec.py) of a stack on a swarm, through a manager's engine."""

    def __init__(self, loaded: LoadedFleet, engine: str | None, out: TextIO, wait: float = 60.0) -> None:
        self.loaded = loaded
        self.engine = engine
        self.out = out
        self.wait = wait
        self.client = engine_client(engine)
        self.orchestrator_runs = self._orchestrator_runs()  # read once: the deploys below keep it so
        self.env = deploy_env(loaded, engine, "service" if self.orchestrator_runs else "host")
        self.stack = annotated(loaded, self.env)
        self.wanted = revisions(self.stack)
        self.others = [name for name in self.stack["services"] if name not in {m.name for m in loaded.miners}]

    def _services(self) -> dict[str, dict[str, Any]]:
        found = self.client.api.services(filters={"label": [f"{STACK_LABEL}={self.loaded.fleet.project}"]})
        return {unit_of(s.get("Spec") or {}): s for s in found}

    def _orchestrator_runs(self) -> bool:
        """Whether the stack's orchestrator runs as its service (not ``swarm up --orchestrator host``,
        which deploys it with 0 replicas); a first deploy runs it."""
        service = self._services().get("orchestrator")
        replicated = ((service or {}).get("Spec", {}).get("Mode") or {}).get("Replicated") or {}
        return service is None or int(replicated.get("Replicas", 1)) > 0

    def prepare(self, miners: Sequence[str]) -> list[str]:
        managers = label_nodes(self.loaded, self.client, self.out)
        load_images(self.loaded, needed_images(self.loaded, self.orchestrator_runs), None, self.out, managers)
        live = self._services()
        changed = [name for name in self.others if self._revision(live.get(name)) != self.wanted[name]]
        stack_deploy(self.loaded, self.engine, self.env, only(self.stack, self.others))
        gone = [name for name in live if name not in self.stack["services"]]
        for name in gone:  # a miner no longer in the fleet file
            self.client.api.remove_service(live[name]["ID"])
        return sorted([*changed, *gone])

    @staticmethod
    def _revision(service: dict[str, Any] | None) -> str | None:
        return (
            None if service is None else ((service.get("Spec") or {}).get("Labels") or {}).get(REVISION_LABEL)
        )

    def changed(self, miners: Sequence[str]) -> list[str]:
        live = self._services()
        return [
            name for name in miners
            if name not in live or self._revision(live[name]) != self.wanted.get(name)
            or ((self._newest(live[name]["ID"]) or {}).get("Status") or {}).get("State") not in _RUNNING
        ]  # fmt: skip

    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.client.api.tasks(filters={"service": service_id})
        return tasks

    def _newest(
        self, service_id: str, skip: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any] | None:
        tasks = [t for t in self._tasks(service_id) if t["ID"] not in skip]
        return max(tasks, key=lambda t: parse_time(t.get("CreatedAt") or "") or 0.0) if tasks else None

    def replace(self, names: Sequence[str]) -> None:
        live = self._services()
        before = {n: {t["ID"] for t in self._tasks(live[n]["ID"])} if n in live else set() for n in names}
        stack_deploy(self.loaded, self.engine, self.env, only(self.stack, [*self.others, *names]))
        deadline = time.monotonic() + self.wait
        waiting = set(names)
        while waiting and time.monotonic() < deadline:
            now = self._services()
            for name in list(waiting):
                if self._settled(now.get(name), before[name]):
                    waiting.discard(name)
            time.sleep(POLL)

    def _settled(self, service: dict[str, Any] | None, old: set[str]) -> bool:
        """The service's new task runs or has ended, or none is coming."""
        if service is None:
            return False
        spec, previous = service.get("Spec") or {}, service.get("PreviousSpec")
        if previous is not None and spec.get("TaskTemplate") == previous.get("TaskTemplate") and old:
            return True  # only the service's own labels changed: its task stays
        task = self._newest(service["ID"], old)
        if task is None:
            return False
        state = (task.get("Status") or {}).get("State", "")
        return state in _RUNNING or state in _ENDED

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        """The target at the address of the node its newest task runs on."""
        service = self._services().get(target.name)
        if service is None:
            return target
        task = self._newest(service["ID"])
        if task is None:
            return target
        nodes = {n["ID"]: n for n in self.client.api.nodes()}
        node = nodes.get(task.get("NodeID", ""))
        return replace(target, host=node_location(node).address) if node else target

    def finish(self) -> None:
        prune_replaced_keys(self.loaded, self.engine, self.env, self.out)
        self.client.close()
