# A stop signal before main() has installed its handlers (imports take seconds on a busy machine) is a
# clean stop, not a crash: as PID 1 the signal would be ignored, under an init it would kill us (-15).
import os
import signal

for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda _signum, _frame: os._exit(0))

from services.miner.app import main  # noqa: E402 - the handlers above must come first

main()
