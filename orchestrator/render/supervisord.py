"""supervisord.conf for hosts without docker: ``supervisord -c config/generated/supervisord.conf``.

Each miner runs its env file with the host's paths layered on top (``environment=``); each model server
runs the host's ``llama-server`` (``render --llama-server PATH``; by default the one on PATH). Nothing
restarts on its own: the orchestrator reads exit codes over XML-RPC and decides, for miners and model
servers alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator.fleet.load import LoadedFleet
from orchestrator.render.envfiles import host_overrides, render_env_file, secret_env
from orchestrator.render.places import HERE_ROOT, Places, llama_server_args

SUPERVISOR_FILE = Path("config/generated/supervisord.conf")
RUN_DIR = Path(".run/supervisor")  # supervisord's logs and pid, git-ignored


def _supervisor_env(pairs: list[tuple[str, str]]) -> str:
    # supervisord reads these like a POSIX shell: JSON values (double quotes inside) go in single quotes
    return ",".join(f"{key}='{value}'" if '"' in value else f'{key}="{value}"' for key, value in pairs)


def _program(name: str, command: str, env: list[tuple[str, str]], stop_wait: int) -> str:
    run = f"{HERE_ROOT}/{RUN_DIR.as_posix()}"
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"directory={HERE_ROOT}",
    ]
    if env:
        lines.append(f"environment={_supervisor_env(env)}")
    lines += [
        "autostart=true",
        # Every exit is final for supervisord; the orchestrator reads the exit code and decides.
        "autorestart=false",
        "startsecs=0",
        "startretries=0",
        "exitcodes=0",
        "stopsignal=TERM",
        f"stopwaitsecs={stop_wait}",
        "stopasgroup=true",
        "killasgroup=true",
        f"stdout_logfile={run}/{name}.out.log",
        f"stderr_logfile={run}/{name}.err.log",
        "stdout_logfile_maxbytes=10MB",
        "stderr_logfile_maxbytes=10MB",
    ]
    return "\n".join(lines) + "\n"


def render_supervisor(loaded: LoadedFleet, host: Places, header: str) -> str:
    fleet = loaded.fleet
    run = f"{HERE_ROOT}/{RUN_DIR.as_posix()}"
    port = fleet.supervisor.port
    parts = [
        header,
        "; Paths are relative to this file (%(here)s). Nothing restarts on its own (autorestart=false):\n"
        "; the orchestrator reads exit codes over XML-RPC and decides.\n\n",
        "[supervisord]\n"
        f"logfile={run}/supervisord.log\n"
        f"pidfile={run}/supervisord.pid\n"
        f"childlogdir={run}\n"
        f"identifier={fleet.project}\n\n",
        f"[inet_http_server]\nport=127.0.0.1:{port}\n\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n",
        f"[supervisorctl]\nserverurl=http://127.0.0.1:{port}\n",
    ]
    for server in loaded.model_servers:
        env = []
        if server.spec.gpus:
            env.append(("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in server.spec.gpus)))
        command = " ".join(llama_server_args(host, server))
        parts.append("\n")
        parts.append(_program(server.service, command, env, stop_wait=10))
    for miner in loaded.miners:
        command = f"{host.python} -m services.miner --env-file %(here)s/{miner.name}.env"
        secrets = secret_env(miner)
        if secrets:
            # supervisord cannot rename a variable: a shell copies it, then becomes the miner (same pid).
            assigns = " ".join(f'{name}="${{{source}}}"' for name, source in secrets)
            command = f"/bin/sh -c '{assigns} exec {command}'"
        # The settings' digest: supervisord sees a program change only in its own section, and the
        # settings live in the env file, so `supervisorctl update` restarts exactly the miners whose
        # settings changed.
        digest = hashlib.sha256(render_env_file(loaded, miner, "").encode()).hexdigest()[:16]
        env = [*host_overrides(loaded, miner, host), ("MINERFLEET_SETTINGS_SHA256", digest)]
        parts.append("\n")
        parts.append(_program(miner.name, command, env, stop_wait=20))
    return "".join(parts)
