"""The supervisord runtime: miners as supervisord programs, driven over its XML-RPC API."""

from __future__ import annotations

import xmlrpc.client
from typing import TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.runtimes.spec import RuntimeSpec
from orchestrator.runtimes.supervisord.runtime import SupervisorRuntime
from orchestrator.runtimes.supervisord.updater import SupervisorUpdater


def _rpc_url(loaded: LoadedFleet) -> str:
    return f"http://127.0.0.1:{loaded.fleet.supervisor.port}/RPC2"


def _runtime(loaded: LoadedFleet) -> SupervisorRuntime:
    return SupervisorRuntime(_rpc_url(loaded))


def _updater(loaded: LoadedFleet, manager: str | None, out: TextIO) -> SupervisorUpdater:
    return SupervisorUpdater(xmlrpc.client.ServerProxy(_rpc_url(loaded)))


SPEC = RuntimeSpec("supervisor", _runtime, _updater)
