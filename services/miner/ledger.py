"""Who asked this miner: validators apart from the fleet's own probe.

A miner the probe finds healthy can still earn nothing: its port closed to the world, a wrong public
address, validators that stopped asking. The probe's requests must not hide that, so each request is
counted by its caller's kind (``probe``: a hotkey of ``allowed_hotkey_files``, the fleet's probe;
``validator``: everyone else) and the ledger keeps, for validators, the requests and answers of the last
hour, the distinct hotkeys seen in it, and the last time one asked and was answered
(docs/ARCHITECTURE.md, "Validators and the probe").

Bounded: one bucket a minute for the last hour, and at most :data:`MAX_HOTKEYS` hotkeys remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

CallerKind = Literal["probe", "validator"]
CALLER_KINDS: tuple[CallerKind, ...] = ("probe", "validator")
HOUR = 3600.0
BUCKET = 60.0
MAX_HOTKEYS = 4096  # distinct validator hotkeys remembered (a subnet has at most 256 uids)


@dataclass
class _Minute:
    start: float
    requests: int = 0
    answered: int = 0
    probe: int = 0


@dataclass(frozen=True)
class LedgerView:
    validator_requests: int  # in the last hour
    validator_answered: int
    validator_hotkeys: int  # distinct, in the last hour
    probe_requests: int
    last_validator_request: float | None  # wall clock
    last_validator_answer: float | None


class CallerLedger:
    """Requests by caller kind over the last hour. Thread-safe (metrics are read from another thread)."""

    def __init__(self, probes: Iterable[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.probes = frozenset(probes)
        self.clock = clock
        self._minutes: deque[_Minute] = deque()
        self._hotkeys: OrderedDict[str, float] = OrderedDict()  # hotkey -> last seen, oldest first
        self._last_request: float | None = None
        self._last_answer: float | None = None
        self._lock = threading.Lock()

    def kind(self, hotkey: str | None) -> CallerKind:
        return "probe" if hotkey in self.probes else "validator"

    def record(self, hotkey: str | None, answered: bool) -> None:
        """One request that ended: ``answered`` when it carried text (done, or cut at its deadline)."""
        now = self.clock()
        with self._lock:
            minute = self._minute(now)
            if self.kind(hotkey) == "probe":
                minute.probe += 1
                return
            minute.requests += 1
            self._last_request = now
            if answered:
                minute.answered += 1
                self._last_answer = now
            if hotkey:
                self._hotkeys.pop(hotkey, None)
                self._hotkeys[hotkey] = now
                while len(self._hotkeys) > MAX_HOTKEYS:
                    self._hotkeys.popitem(last=False)

    def view(self) -> LedgerView:
        now = self.clock()
        with self._lock:
            self._forget(now)
            while self._hotkeys and next(iter(self._hotkeys.values())) <= now - HOUR:
                self._hotkeys.popitem(last=False)
            return LedgerView(
                validator_requests=sum(m.requests for m in self._minutes),
                validator_answered=sum(m.answered for m in self._minutes),
                validator_hotkeys=len(self._hotkeys),
                probe_requests=sum(m.probe for m in self._minutes),
                last_validator_request=self._last_request,
                last_validator_answer=self._last_answer,
            )

    def _minute(self, now: float) -> _Minute:
        self._forget(now)
        start = now - now % BUCKET
        if not self._minutes or self._minutes[-1].start != start:
            self._minutes.append(_Minute(start))
        return self._minutes[-1]

    def _forget(self, now: float) -> None:
        while self._minutes and self._minutes[0].start <= now - HOUR:
            self._minutes.popleft()
