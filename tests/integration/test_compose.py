"""The compose stack on a real Docker engine (started by the test setup itself when it is missing).

The images are built offline by scripts/images.sh (debootstrap base, llama.cpp compiled once and its
wheel cached). Each test runs its own compose project from a temporary project directory with free
ports, so a fleet the operator runs with `make up` is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.fleets import SHIPPED_FLEET, make_project
from tests.helpers import GGUF, ROOT, free_ports, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.docker]

IMAGES = "cpu orchestrator"


def _run(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",  # a build tool's output is not ours to trust as UTF-8
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


@pytest.fixture(scope="session")
def docker_images() -> None:
    """A running engine and the images: what `make up` does first (minutes the first time only)."""
    _run("bash", "scripts/images.sh", timeout=3600, env={"MINERFLEET_IMAGES": IMAGES})


def _compose_env() -> dict[str, str]:
    return {
        "MINERFLEET_UID": "1000",
        "MINERFLEET_GID": "1000",
        "MINERFLEET_DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }


class Stack:
    def __init__(self, project: Path, name: str) -> None:
        self.project = project
        self.name = name

    def compose(self, *args: str, timeout: float = 600) -> str:
        return _run("bash", str(ROOT / "scripts/compose.sh"), "-p", self.name, *args, cwd=self.project,
                    timeout=timeout, env=_compose_env())  # fmt: skip

    def orchestrator(self, *args: str) -> str:
        where = ["--config", str(self.project / "config/miners.yaml"), "--project-dir", str(self.project)]
        return _run(sys.executable, "-m", "orchestrator", *args, *where, env=_compose_env())

    def health(self) -> tuple[int, dict[str, Any]]:
        where = ["--config", str(self.project / "config/miners.yaml"), "--project-dir", str(self.project)]
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "health", "--json", *where],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return proc.returncode, json.loads(proc.stdout or "{}")

    def container(self, service: str) -> Any:
        import docker

        client = docker.from_env()
        found = client.containers.list(
            all=True,
            filters={
                "label": [f"com.docker.compose.project={self.name}", f"com.docker.compose.service={service}"]
            },
        )
        assert len(found) == 1, f"{service}: {found}"
        return found[0]


@contextmanager
def stack(tmp_path: Path, fleet: str) -> Iterator[Stack]:
    project = tmp_path / "project"
    make_project(project, fleet, keys=False, model=False)
    (project / "models").mkdir(exist_ok=True)
    try:
        os.link(GGUF, project / "models" / GGUF.name)
    except OSError:
        shutil.copyfile(GGUF, project / "models" / GGUF.name)
    name = f"mftest{os.getpid()}{time.monotonic_ns() % 100000}"
    s = Stack(project, name)
    s.orchestrator("wallets")
    s.orchestrator("render")
    try:
        s.compose("up", "-d", "--no-build")
        yield s
    finally:
        try:
            logs = s.compose("logs", "--no-color", "--tail=30", timeout=60)
            print(logs[-6000:])
        finally:
            s.compose("down", "--remove-orphans", "-t", "5", timeout=180)


def _wait(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return {m["name"]: m for m in data["miners"]}


def _servers(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return {m["name"]: m for m in data.get("model_servers", [])}


def _status_when(port: int, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The status API's view of the miners once ``check`` holds (None until then, or while it is down)."""
    try:
        status = _status(port)
    except OSError:
        return None
    return status if check(status) else None


def _running(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: all(status[name]["state"] == "RUNNING" for name in names)


def _restarted(name: str, reason: str) -> Callable[[dict[str, Any]], bool]:
    """Restarted once for ``reason`` and running again."""
    return lambda status: bool(
        status[name]["restarts_by_reason"].get(reason) == 1 and status[name]["state"] == "RUNNING"
    )


# A miner streams when its probe is healthy, or slow: still streaming text at the probe's deadline
# because the box is busy (the watch shows it UNHEALTHY overloaded and never restarts it).
STREAMING = ("healthy", "slow")


def _probed_streaming(status: dict[str, Any]) -> bool:
    return all((m["last_probe"] or {}).get("verdict") in STREAMING for m in status.values())


def _up(miner: dict[str, Any]) -> bool:
    """RUNNING, or UNHEALTHY only because it is loaded (see STREAMING)."""
    return miner["state"] == "RUNNING" or (miner["state"], miner["reason"]) == ("UNHEALTHY", "overloaded")


def _all_streaming(s: Stack) -> dict[str, Any] | None:
    """``health --json`` once every miner streams (see STREAMING), else None."""
    _, report = s.health()
    miners = report.get("miners") or []
    return report if miners and all(m["verdict"] in STREAMING for m in miners) else None


def _shipped_with_free_ports() -> tuple[str, int]:
    """The shipped fleet file, only moved to free ports (so a running `make up` stack is not touched),
    and its status API port."""
    base, *_ = block = free_ports(4, consecutive=True)
    server_port, status_port = free_ports(2, taken=block)
    text = SHIPPED_FLEET.read_text(encoding="utf-8")
    replacements = {
        "port_base: 8091": f"port_base: {base}",
        "  port: 8000": f"  port: {server_port}",
        "  port: 9100": f"  port: {status_port}",
        "project: minerfleet": "project: minerfleet-test",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text, status_port


def test_the_shipped_fleet_comes_up_and_streams_real_tokens(docker_images: None, tmp_path: Path) -> None:
    fleet, status_port = _shipped_with_free_ports()
    with stack(tmp_path, fleet) as s:
        report = _wait("every miner streaming", lambda: _all_streaming(s))
        miners = {m["name"]: m for m in report["miners"]}
        assert set(miners) == {"gemma-1", "gemma-2", "echo-1", "solo-1"}
        for name in ("gemma-1", "gemma-2", "solo-1"):  # the shared llama-server, and llama.cpp in the miner
            assert miners[name]["verdict"] in STREAMING
            assert len(miners[name]["completion"].split()) >= 3, miners[name]
        assert miners["echo-1"]["completion"] == "In one sentence, what is a language model?"

        # Inside a running miner: not root, the hotkey read-only, no coldkey anywhere. Judged by exit codes
        # and the engine's own record: exec_run's output can come back short (docker/docker-py#2042; CI
        # once lost the last line of a combined shell command here).
        miner = s.container("gemma-1")
        assert miner.attrs["Config"]["User"].split(":")[0] not in ("", "0", "root")
        assert miner.exec_run(["sh", "-c", '[ "$(id -u)" != 0 ]']).exit_code == 0
        hotkey = "/wallets/fleet/hotkeys/gemma-1"
        assert {m["Destination"]: m["RW"] for m in miner.attrs["Mounts"]}[hotkey] is False
        touch = miner.exec_run(["touch", hotkey])
        assert touch.exit_code != 0, touch
        no_coldkey = '[ -f /wallets/fleet/coldkeypub.txt ] && [ -z "$(find /wallets -name coldkey)" ]'
        assert miner.exec_run(["sh", "-c", no_coldkey]).exit_code == 0
        assert s.container("orchestrator").attrs["Config"]["User"].split(":")[0] != "0"
        # Hardened: an init, a read-only root, no capabilities, no privilege gain, limits.
        for service in ("gemma-1", "solo-1", "echo-1", "model-server", "orchestrator"):
            host = s.container(service).attrs["HostConfig"]
            assert host["Init"] is True, service
            assert host["ReadonlyRootfs"] is True, service
            assert host["CapDrop"] == ["ALL"], service
            assert "no-new-privileges:true" in host["SecurityOpt"], service
            assert host["Memory"] > 0 and host["PidsLimit"] > 0, service

        # The orchestrator container adopted them all (nothing restarted) and probes them itself.
        status = _wait("the orchestrator's own probes", lambda: _status_when(status_port, _probed_streaming))
        assert all(_up(m) and m["restarts"] == 0 for m in status.values()), status
        servers = _servers(status_port)
        assert servers["model-server"]["state"] == "RUNNING", servers


def _clone_like(project: Path) -> None:
    """The committed files of this checkout only (no wallets, no models, nothing rendered here)."""
    listed = _run("git", "ls-files", "-z").split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)


def test_a_plain_compose_up_right_after_a_clone(docker_images: None, tmp_path: Path) -> None:
    # The committed docker-compose.yml and config/generated/ run as they are: the `init` one-shot creates
    # the local hotkeys before any other container is created (so docker never meets a missing key file
    # and leaves an empty directory there). The model is linked in as `make model` would have put it:
    # init fetches it from PyPI otherwise, which this test must not depend on.
    project = tmp_path / "clone"
    _clone_like(project)
    assert (project / "config/generated/gemma-1.env").is_file()
    assert not (project / "wallets").exists()
    fleet, status_port = _shipped_with_free_ports()
    (project / "config/miners.yaml").write_text(fleet, encoding="utf-8")
    where = ["--config", str(project / "config/miners.yaml"), "--project-dir", str(project)]
    _run(sys.executable, "-m", "orchestrator", "render", *where)  # new ports only; no key needed
    (project / "models").mkdir(exist_ok=True)
    try:
        os.link(GGUF, project / "models" / GGUF.name)
    except OSError:
        shutil.copyfile(GGUF, project / "models" / GGUF.name)
    s = Stack(project, f"mfclone{os.getpid()}{time.monotonic_ns() % 100000}")
    try:
        s.compose("up", "-d", "--no-build")

        report = _wait("every miner streaming", lambda: _all_streaming(s))
        assert {m["name"] for m in report["miners"]} == {"gemma-1", "gemma-2", "echo-1", "solo-1"}
        for key in ("probe/hotkeys/default", "probe/hotkeys/defaultpub.txt", "fleet/hotkeys/gemma-1"):
            assert (project / "wallets" / key).is_file(), key  # a file, not docker's empty directory
            assert (project / "wallets" / key).stat().st_uid == 1000, key  # handed to the containers' uid
        assert s.container("init").attrs["State"]["ExitCode"] == 0
        status = _wait("the orchestrator's own probes", lambda: _status_when(status_port, _probed_streaming))
        assert all(_up(m) for m in status.values()), status
    finally:
        try:
            print(s.compose("logs", "--no-color", "--tail=30", timeout=60)[-6000:])
        finally:
            s.compose("down", "--remove-orphans", "-t", "5", timeout=180)


def test_supervision_with_the_docker_runtime(docker_images: None, tmp_path: Path) -> None:
    steady, faulty, broken, status_port = free_ports(4)
    fleet = f"""
    network: local
    wallet_path: ./wallets
    project: mfsup
    probe: {{wallet: probe, hotkey: default, timeout: 3, interval: 2, prompt: "are you there"}}
    status_api: {{port: {status_port}}}
    restart: {{backoff_initial: 0.5, backoff_max: 2, start_grace: 20, unhealthy_after_failed_probes: 2}}
    models:
      broken: {{path: ./models/broken.gguf}}
    defaults: {{wallet: fleet, stop_on_forward_exception: true}}
    miners:
      - {{name: steady, hotkey: steady, backend: echo, axon_port: {steady}}}
      - {{name: faulty, hotkey: faulty, backend: echo, axon_port: {faulty}, echo: {{fail_after_tokens: 5}}}}
      - {{name: broken, hotkey: broken, backend: llamacpp, axon_port: {broken}, llamacpp: {{model: broken}}}}
    """
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models/broken.gguf").write_bytes(b"not a model")
    with stack(tmp_path, fleet) as s:
        wait_for_port(status_port, 120)
        # A bad setting: FATAL after one try, with the miner's own error line.
        status = _wait(
            "broken FATAL", lambda: _status_when(status_port, lambda x: x["broken"]["state"] == "FATAL")
        )
        assert status["broken"]["reason"] == "config-error"
        assert status["broken"]["detail"].startswith("error: MINER_LLAMACPP__MODEL_PATH: cannot load")

        _wait("steady and faulty running", lambda: _status_when(status_port, _running("steady", "faulty")))
        ids = {name: s.container(name).id for name in ("steady", "faulty")}

        # exit 75 -> restarted and healthy again.
        asyncio.run(_ask(s.project, "faulty", faulty, "one two three four five six seven"))
        _wait(
            "faulty back after exit 75",
            lambda: _status_when(status_port, _restarted("faulty", "forward-exception")),
        )

        # docker kill -> back.
        s.container("steady").kill()
        _wait(
            "steady back after docker kill",
            lambda: _status_when(status_port, _restarted("steady", "killed:SIGKILL")),
        )

        # The orchestrator container restarted: miners untouched (same containers, same start times).
        started = {name: s.container(name).attrs["State"]["StartedAt"] for name in ids}
        s.container("orchestrator").restart(timeout=10)
        time.sleep(2)
        status = _wait(
            "adopted after the orchestrator's restart", lambda: _status_when(status_port, _running(*ids))
        )
        assert {name: s.container(name).id for name in ids} == ids
        assert {name: s.container(name).attrs["State"]["StartedAt"] for name in ids} == started
        # Its decisions survived its restart: the counts, and broken's FATAL.
        assert {name: status[name]["restarts"] for name in ids} == {"steady": 1, "faulty": 1}
        assert status["broken"]["state"] == "FATAL"

        # The operator edits the fleet file (steady moves to another port) and runs compose up again, as
        # `make up` does: compose recreates steady, and the orchestrator too (its definition carries the
        # fleet file's hash), which then probes steady on its new port instead of restarting it.
        moved = free_ports(1, taken=[steady, faulty, broken, status_port])[0]
        config = s.project / "config/miners.yaml"
        config.write_text(config.read_text().replace(f"axon_port: {steady}}}", f"axon_port: {moved}}}"))
        s.orchestrator("render")
        s.compose("up", "-d", "--no-build")
        status = _wait(
            "steady streaming on its new port",
            lambda: _status_when(
                status_port,
                lambda x: (
                    x["steady"]["port"] == moved
                    and x["steady"]["state"] == "RUNNING"
                    and bool((x["steady"]["last_probe"] or {}).get("healthy"))
                ),
            ),
        )
        assert status["steady"]["restarts"] == 1  # the move cost no restart of the orchestrator's
        # compose up started broken's container again: it exits 78 again and is FATAL again.
        _wait(
            "broken FATAL again", lambda: _status_when(status_port, lambda x: x["broken"]["state"] == "FATAL")
        )


async def _ask(project: Path, miner: str, port: int, prompt: str, timeout: float = 10) -> Any:
    from bittensor_wallet import Wallet

    from orchestrator.render import read_ss58

    dendrite = make_dendrite(Wallet(name="probe", hotkey="default", path=str(project / "wallets")))
    target = axon_info("127.0.0.1", port, read_ss58(project / f"wallets/fleet/hotkeys/{miner}"))
    try:
        return await stream_once(dendrite, target, make_synapse("prompting", prompt), timeout)
    finally:
        await dendrite.aclose_session()


def _project_leftovers(name: str) -> list[str]:
    """Containers and networks of compose project ``name`` that still exist."""
    import docker

    client = docker.from_env()
    label = f"com.docker.compose.project={name}"
    containers = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    networks = [n.name for n in client.networks.list(filters={"label": label})]
    return containers + networks


def test_fault_injection_on_a_real_stack(docker_images: None, tmp_path: Path) -> None:
    """Kill, hang, a model server killed and back, hostile inputs, a crash loop, the orchestrator
    restarted, and `down` while a miner waits in BACKOFF: each with the state and reason an operator
    expects, and nothing left behind."""
    steady, hung, doomed, served, slow, server_port, status_port = free_ports(7)
    fleet = f"""
    network: local
    wallet_path: ./wallets
    project: mffault
    probe: {{wallet: probe, hotkey: default, timeout: 8, interval: 2, prompt: "are you there"}}
    status_api: {{port: {status_port}}}
    restart:
      backoff_initial: 0.5
      backoff_max: 2
      start_grace: 30
      unhealthy_after_failed_probes: 2
      crash_loop_max_restarts: 2
      crash_loop_window: 600
    models: {{gemma: {{gguf: gemma-3-270m-q4_k_m}}}}
    model_servers:
      gemma: {{model: gemma, port: {server_port}, slots: 2, ctx_per_slot: 512, n_threads: 1}}
    defaults: {{wallet: fleet, stop_on_forward_exception: true, max_tokens: 8}}
    miners:
      - {{name: steady, hotkey: steady, backend: echo, axon_port: {steady}}}
      - {{name: hung, hotkey: hung, backend: echo, axon_port: {hung}}}
      - {{name: doomed, hotkey: doomed, backend: echo, axon_port: {doomed}, echo: {{fail_after_tokens: 0}}}}
      - name: served
        hotkey: served
        backend: openai
        axon_port: {served}
        openai: {{model_server: gemma}}
      - name: slow
        hotkey: slow
        backend: echo
        axon_port: {slow}
        echo: {{fail_after_tokens: 4}}
        restart: {{backoff_initial: 120, backoff_max: 120}}
    """
    project_name = ""
    with stack(tmp_path, fleet) as s:
        project_name = s.name
        wait_for_port(status_port, 180)
        everyone = ("steady", "hung", "served", "slow")
        _wait("the fleet running", lambda: _status_when(status_port, _running(*everyone)), timeout=300)

        # A miner that fails every request crash-loops into FATAL, with the reason, and stays there.
        status = _wait(
            "doomed FATAL", lambda: _status_when(status_port, lambda x: x["doomed"]["state"] == "FATAL")
        )
        assert status["doomed"]["reason"] == "crash-loop"

        # Hostile inputs are answers with a status, never exits.
        answers = [
            asyncio.run(_ask(s.project, "steady", steady, prompt))
            for prompt in ("bad \ud800 text", "word " * 20_000, "x" * 2_000_000)
        ]
        assert [a.status_code for a in answers] == [400, 413, 413], [a.status_message for a in answers]

        # docker kill -> restarted, named.
        s.container("steady").kill()
        _wait("steady back", lambda: _status_when(status_port, _restarted("steady", "killed:SIGKILL")))

        # Hung (paused): failed probes restart it.
        s.container("hung").pause()
        status = _wait(
            "hung restarted",
            lambda: _status_when(
                status_port, lambda x: x["hung"]["restarts_by_reason"].get("probe-failed", 0) >= 1
            ),
        )
        _wait("hung running", lambda: _status_when(status_port, _running("hung")))

        # The model server killed: its miner answers 503 naming it (and is not restarted for it); the
        # orchestrator restarts the server and the miner recovers by itself.
        s.container("model-server").kill()
        down = asyncio.run(_ask(s.project, "served", served, "are you there"))
        assert down.status_code == 503 and down.status_message.startswith("dependency down:"), down
        _wait(
            "the model server restarted",
            lambda: (lambda v: v if v.get("restarts", 0) >= 1 and v["state"] == "RUNNING" else None)(
                _servers(status_port)["model-server"]
            ),
            timeout=300,
        )
        status = _wait("served healthy again", lambda: _status_when(status_port, _running("served")), 300)
        assert status["served"]["restarts"] == 0

        # The orchestrator restarted: FATAL stays FATAL, counts survive.
        before = _status(status_port)
        s.container("orchestrator").restart(timeout=10)
        time.sleep(2)
        after = _wait("the orchestrator back", lambda: _status_when(status_port, _running("steady")))
        assert after["doomed"]["state"] == "FATAL"
        assert after["steady"]["restarts"] == before["steady"]["restarts"] >= 1
        assert after["hung"]["restarts"] == before["hung"]["restarts"] >= 1

        # slow fails once (the probe's three words pass, six do not): BACKOFF for 120 s. The teardown
        # below happens during that backoff.
        asyncio.run(_ask(s.project, "slow", slow, "one two three four five six"))
        _wait("slow in BACKOFF", lambda: _status_when(status_port, lambda x: x["slow"]["state"] == "BACKOFF"))
    # stack() ran `compose down`, which raises if it exits non-zero; nothing of the project is left.
    assert project_name and _project_leftovers(project_name) == []


def _echo_fleet(ports: list[int], status_port: int, max_tokens: int, broken: str | None = None) -> str:
    miners = "\n".join(
        f"  - {{name: m-{i}, hotkey: m-{i}, backend: echo, axon_port: {port}"
        + (", echo: {fail_after_tokens: 0}" if f"m-{i}" == broken else "")
        + "}"
        for i, port in enumerate(ports, start=1)
    )
    return (
        "network: local\nwallet_path: ./wallets\nproject: minerfleet-rollout\n"
        f"status_api: {{port: {status_port}}}\n"
        'probe: {wallet: probe, hotkey: default, timeout: 4, prompt: "are you there"}\n'
        "rollout: {max_unavailable: 1, wait: 60}\n"
        f"defaults: {{wallet: fleet, max_tokens: {max_tokens}, stop_on_forward_exception: false}}\n"
        f"miners:\n{miners}\n"
    )


def test_a_rolling_update_under_compose_keeps_three_of_four_answering(
    docker_images: None, tmp_path: Path
) -> None:
    from tests.rounds import WORDS, AskingAll

    *ports, status_port = free_ports(5)
    names = {f"m-{i}": port for i, port in enumerate(ports, start=1)}
    with stack(tmp_path, _echo_fleet(ports, status_port, max_tokens=64)) as s:
        ask = AskingAll(s.project, names)
        _wait("every miner answering", lambda: set(ask.once().values()) == {WORDS})
        env = {**_compose_env(), "COMPOSE_PROJECT_NAME": s.name}

        def rollout(*args: str) -> subprocess.CompletedProcess[str]:
            where = ["--config", str(s.project / "config/miners.yaml"), "--project-dir", str(s.project)]
            return subprocess.run(
                [sys.executable, "-m", "orchestrator", "rollout", *args, *where],
                cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env},
            )  # fmt: skip

        assert rollout("--save").returncode == 0
        make_project(s.project, _echo_fleet(ports, status_port, max_tokens=3), keys=False, model=False)
        s.orchestrator("render")
        with AskingAll(s.project, names) as asking:
            done = rollout("--runtime", "docker")
            time.sleep(1.0)
        assert done.returncode == 0, done.stderr
        assert "4 of 4 miners changed" in done.stderr and "rollout done: 4 miner(s) replaced" in done.stderr
        answering = asking.answering()
        assert len(answering) >= 5 and min(answering) >= 3, answering
        assert set(ask.once().values()) == {"one two three "}

        assert rollout("--save").returncode == 0
        make_project(s.project, _echo_fleet(ports, status_port, 5, broken="m-1"), keys=False, model=False)
        s.orchestrator("render")
        stopped = rollout("--runtime", "docker")
        assert stopped.returncode == 1 and "stopped: m-1 did not stream" in stopped.stderr, stopped.stderr
        answers = ask.once()
        assert answers["m-1"] == "" and {answers[n] for n in ("m-2", "m-3", "m-4")} == {"one two three "}
        back = rollout("--runtime", "docker", "--rollback")
        assert back.returncode == 0, back.stderr
        assert set(ask.once().values()) == {"one two three "}
