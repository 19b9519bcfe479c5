"""A validator asking every miner of a fleet at once, round after round, in a thread of its own: which
miners answered in each round (the rolling-update tests count them while miners are replaced).

Also a command, for miners only another network namespace reaches (the swarm lab's nodes)::

    python -m tests.rounds PROJECT NAME=HOST:PORT ... [--once]

``--once``: one round, its answers as JSON. Otherwise rounds until SIGTERM, then how many miners
answered in each round, as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from orchestrator.render import read_ss58
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

WORDS = "one two three four five six seven eight nine ten"


class AskingAll:
    """Signed by the fleet's probe key (``wallets/probe/hotkeys/default``); miners in ``ports``."""

    def __init__(
        self, project: Path, ports: dict[str, int], every: float = 0.2, hosts: dict[str, str] | None = None
    ) -> None:
        """``hosts``: a miner's address when it is not 127.0.0.1."""
        from bittensor_wallet import Wallet

        self.wallet = Wallet(name="probe", hotkey="default", path=str(project / "wallets"))
        hotkeys = project / "wallets/fleet/hotkeys"
        self.targets = {
            name: axon_info((hosts or {}).get(name, "127.0.0.1"), port, read_ss58(hotkeys / name))
            for name, port in ports.items()
        }
        self.every = every
        self.rounds: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def ask_all(self, dendrite: Any) -> dict[str, str]:
        """Each miner's answer to one request sent to all at once ("" for anything but a 200)."""
        asks = [
            stream_once(dendrite, t, make_synapse("prompting", WORDS), timeout=4)
            for t in self.targets.values()
        ]
        results = await asyncio.gather(*asks)
        return {
            n: (r.completion if r.status_code == 200 else "")
            for n, r in zip(self.targets, results, strict=True)
        }

    def once(self) -> dict[str, str]:
        async def run() -> dict[str, str]:
            dendrite = make_dendrite(self.wallet)
            try:
                return await self.ask_all(dendrite)
            finally:
                await dendrite.aclose_session()

        return asyncio.run(run())

    async def _run(self) -> None:
        dendrite = make_dendrite(self.wallet)
        try:
            while not self._stop.is_set():
                self.rounds.append(await self.ask_all(dendrite))
                await asyncio.sleep(self.every)
        finally:
            await dendrite.aclose_session()

    def __enter__(self) -> AskingAll:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def answering(self) -> list[int]:
        """How many miners answered with text in each round."""
        return [sum(1 for text in r.values() if text) for r in self.rounds]


def main(argv: list[str]) -> None:
    project, *miners = [a for a in argv if a != "--once"]
    ports, hosts = {}, {}
    for miner in miners:
        name, _, where = miner.partition("=")
        hosts[name], _, port = where.rpartition(":")
        ports[name] = int(port)
    asking = AskingAll(Path(project), ports, hosts=hosts)
    if "--once" in argv:
        print(json.dumps(asking.once()))
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with asking:
        print("asking", file=sys.stderr, flush=True)
        stop.wait()
    print(json.dumps(asking.answering()))


if __name__ == "__main__":
    main(sys.argv[1:])
