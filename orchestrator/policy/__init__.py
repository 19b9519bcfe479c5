"""The restart policy: one pure state machine per supervised unit (miner or model server).

| module | what it holds |
|---|---|
| :mod:`~orchestrator.policy.states` | states, actions, reasons, and the tunables (``RestartPolicy``) |
| :mod:`~orchestrator.policy.records` | a unit's record, its decisions, exit classes |
| :mod:`~orchestrator.policy.events` | what the watch loop feeds in, one dataclass per event |
| :mod:`~orchestrator.policy.transition` | ``transition(record, event, policy) -> (record, actions)`` |
"""

from orchestrator.policy.events import (
    Adopted,
    Blame,
    Event,
    Exited,
    OperatorStopped,
    ProbeResult,
    Resumed,
    Started,
    StartRequested,
    StopRequested,
    Tick,
)
from orchestrator.policy.records import Decision, MinerRecord, classify_exit
from orchestrator.policy.states import HISTORY_LENGTH, Action, Reason, RestartPolicy, State
from orchestrator.policy.transition import transition

__all__ = [
    "HISTORY_LENGTH",
    "Action",
    "Adopted",
    "Blame",
    "Decision",
    "Event",
    "Exited",
    "MinerRecord",
    "OperatorStopped",
    "ProbeResult",
    "Reason",
    "RestartPolicy",
    "Resumed",
    "StartRequested",
    "Started",
    "State",
    "StopRequested",
    "Tick",
    "classify_exit",
    "transition",
]
