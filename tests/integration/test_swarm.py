"""The fleet on a real Docker Swarm of two nodes on this machine (scripts/swarm-lab.sh: a `dockerd` per
node, each in its own network namespace, linked by veths on 10.213.0.0/24 inside those namespaces).

One test walks the operator's path: `swarm up` (labels, the miner image loaded into both engines, deploy,
wait until every miner streams at its node's address), the watch with the swarm runtime (run as a host
process in the manager's network namespace; the stack file's orchestrator service is deployed with 0
replicas), a miner killed on the worker restarted with its reason, a node drained and the worker switched
off (the miner placed by labels moves; the one pinned there is reported down with the reason, and comes
back when the node does), `swarm down` leaving nothing behind. A second test runs the rendered default:
the orchestrator as the stack's own service on the manager (this tree's orchestrator image, under a tag
of its own, loaded into the manager). The lab itself is removed afterwards, even on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleets import make_project
from tests.helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.docker]

LAB_ENV = {
    "MINERFLEET_SWARM_PREFIX": "mfswt",
    "MINERFLEET_SWARM_LAB": f"/tmp/minerfleet-swarm-test-{os.getpid()}",
}
STATUS_PORT = 9100  # inside the manager's namespace: nothing else listens there
STACK = "mfswarmtest"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the test swarm's nodes are dockerds in network namespaces"
    missing = [tool for tool in ("dockerd", "docker", "nsenter", "ip") if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"no {', '.join(missing)} and no apt-get to install the engine"
    return None


def _run(*args: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=timeout,
        env={**os.environ, **LAB_ENV, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _lab(*args: str) -> str:
    return _run("bash", "scripts/swarm-lab.sh", *args, timeout=300).strip()


class Lab:
    def __init__(self) -> None:
        self.manager, self.worker = _lab("host", "1"), _lab("host", "2")
        self.netns = _lab("netns", "1")
        self.worker_netns = _lab("netns", "2")

    def in_manager(self, *args: str, **kwargs: Any) -> str:
        """A command in the manager's network namespace (where the nodes' addresses are)."""
        return _run("nsenter", f"--net={self.netns}", "--", *args, **kwargs)

    def docker(self, engine: str, *args: str) -> str:
        return _run("docker", "-H", engine, *args).strip()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    # A running engine and the miner image (built once, cached): what `make images` does.
    _run("bash", "scripts/images.sh", timeout=3600, env={"MINERFLEET_IMAGES": "cpu"})
    started = time.monotonic()
    try:
        _lab("up", "2")
        print(f"swarm lab up in {time.monotonic() - started:.1f} s")
        yield Lab()
    finally:
        _lab("down")
        left = [n for n in os.listdir("/var/run/netns") if n.startswith("mfswt-")] if os.path.isdir(
            "/var/run/netns"
        ) else []  # fmt: skip
        assert not left, f"network namespaces left behind: {left}"
        assert not Path(LAB_ENV["MINERFLEET_SWARM_LAB"]).exists()


def _fleet(lab: Lab) -> str:
    return f"""
network: local
wallet_path: ./wallets
project: {STACK}
status_api: {{port: {STATUS_PORT}}}
probe: {{interval: 2, timeout: 5}}
restart: {{start_grace: 5, backoff_initial: 1, backoff_max: 4}}
nodes:
  alpha: {{address: 10.213.0.1, engine: "{lab.manager}", labels: {{pool: echo}}}}
  beta: {{address: 10.213.0.2, engine: "{lab.worker}", labels: {{pool: echo}}}}
defaults: {{wallet: fleet, backend: echo}}
miners:
  # the same port on both nodes: ports are unique per node
  - {{name: echo-a, hotkey: echo-a, node: alpha, axon_port: 8091}}
  - {{name: echo-b, hotkey: echo-b, node: beta, axon_port: 8091}}
  # placed by labels: may run on either node, and moves when its node is drained
  - {{name: echo-c, hotkey: echo-c, node_labels: {{pool: echo}}, axon_port: 8092}}
"""


def _start_watch(lab: Lab, where: list[str], state: Path) -> subprocess.Popen[bytes]:
    """The watch with the swarm runtime, as a host process in the manager's network namespace."""
    return subprocess.Popen(
        ["nsenter", f"--net={lab.netns}", "--", sys.executable, "-m", "orchestrator", "watch", "--runtime",
         "swarm", *where, "--state", str(state)],
        cwd=ROOT, env={**os.environ, "DOCKER_HOST": lab.manager, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _stop(watch: subprocess.Popen[bytes] | None) -> None:
    """Stop the watch as the operator would (SIGTERM), killing it if it does not end."""
    if watch is None:
        return
    watch.send_signal(signal.SIGTERM)
    try:
        watch.wait(timeout=30)
    except subprocess.TimeoutExpired:
        watch.kill()
        watch.wait()


def _wait(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:  # the status API not answering yet
            last = str(exc)[-300:]
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_a_fleet_on_a_two_node_swarm(lab: Lab, tmp_path: Path) -> None:
    began = time.monotonic()
    project = tmp_path / "project"
    config = make_project(project, _fleet(lab), keys=False, model=False)
    where = ["--config", str(config), "--project-dir", str(project)]
    orchestrator = [sys.executable, "-m", "orchestrator"]
    watch: subprocess.Popen[bytes] | None = None

    def status() -> dict[str, dict[str, Any]]:
        text = lab.in_manager(
            sys.executable, "-S", "-c",
            "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())",
            f"http://127.0.0.1:{STATUS_PORT}/status", timeout=30,
        )  # fmt: skip
        return {m["name"]: m for m in json.loads(text)["miners"]}

    try:
        # 1. swarm up: labels, image on both nodes, deploy, every miner streaming at its node's address
        out = lab.in_manager(*orchestrator, "swarm", "up", *where, "--manager", lab.manager,
                             "--orchestrator", "host", "--timeout", "120")  # fmt: skip
        print(out)
        print(f"swarm up took {time.monotonic() - began:.1f} s")
        rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("echo-")}
        assert rows["echo-a"][1:4] == ["alpha", "10.213.0.1", "8091"], out
        assert rows["echo-b"][1:4] == ["beta", "10.213.0.2", "8091"], out
        assert all(row[5] == "healthy" for row in rows.values()), out
        assert "mode: host" in (project / "docker-stack.yml").read_text(encoding="utf-8")

        # the plain health command, through each node's address, like a validator
        for host, miner in (("10.213.0.1", "echo-a"), ("10.213.0.2", "echo-b")):
            report = json.loads(lab.in_manager(*orchestrator, "health", "--json", "--host", host,
                                               "--miner", miner, *where))  # fmt: skip
            assert report["healthy"], report
        # the operator rotates echo-b's hotkey and edits the fleet file, then runs swarm up again: Docker
        # cannot change a secret or config in place, so each new content is deployed under a new name
        # and the old versions are removed; echo-b answers for its new hotkey
        hotkeys = project / "wallets/fleet/hotkeys"
        old_pub = (hotkeys / "echo-bpub.txt").read_text()
        for name in ("echo-b", "echo-bpub.txt"):
            (hotkeys / name).unlink()
        config.write_text(config.read_text() + "# edited after the first deploy\n")
        out = lab.in_manager(*orchestrator, "swarm", "up", *where, "--manager", lab.manager,
                             "--orchestrator", "host", "--timeout", "120")  # fmt: skip
        print(out)
        assert (hotkeys / "echo-bpub.txt").read_text() != old_pub
        assert "replaced secret/config version(s)" in out and "hotkey-echo-b" in out, out
        report = json.loads(lab.in_manager(*orchestrator, "health", "--json", "--host", "10.213.0.2",
                                           "--miner", "echo-b", *where))  # fmt: skip
        assert report["healthy"], report
        print(f"redeploy with a new hotkey took until {time.monotonic() - began:.1f} s")

        # on the worker: the miner's own hotkey only, read-only, not root; no coldkey
        container = lab.docker(lab.worker, "ps", "-q", "--filter", "label=minerfleet.miner=echo-b")
        listing = lab.docker(
            lab.worker,
            "exec",
            container,
            "sh",
            "-c",
            "id -u; find /wallets -type f | sort; touch /wallets/fleet/hotkeys/echo-b || echo RO",
        )
        uid, *files = listing.splitlines()
        assert uid == "1000"
        expected = ["fleet/coldkeypub.txt", "fleet/hotkeys/echo-b", "probe/hotkeys/defaultpub.txt"]
        assert files == [*(f"/wallets/{f}" for f in expected), "RO"], listing

        # 2. the watch, with the swarm runtime, on the manager
        watch = _start_watch(lab, where, tmp_path / "state.json")
        _wait(
            "the watch adopts every miner and probes it",
            lambda: all(
                m["state"] == "RUNNING" and (m["last_probe"] or {}).get("healthy") for m in status().values()
            ),
        )
        seen = status()
        assert (seen["echo-b"]["node"], seen["echo-b"]["address"]) == ("beta", "10.213.0.2")
        assert seen["echo-b"]["last_probe"]["healthy"]

        # 3. a miner killed on the worker: restarted by the orchestrator, with the reason
        lab.docker(lab.worker, "kill", container)
        restarted = _wait(
            "echo-b restarted after its kill",
            lambda: (
                (m := status()["echo-b"])["state"] == "RUNNING"
                and m["restarts_by_reason"].get("killed:SIGKILL") == 1
                and m
            ),
        )
        assert restarted["node"] == "beta"
        assert any("task: non-zero exit (137)" in h["detail"] for h in restarted["history"]), restarted
        print(f"kill handled at {time.monotonic() - began:.1f} s")

        # 4. the node echo-c runs on is drained, or switched off: echo-c (placed by labels) moves to the
        # other node; the miner pinned there is reported down with the reason, and back with the node.
        # Only the worker can be switched off (the manager holds the swarm), only a node echo-c runs on
        # shows it move: whichever node it starts on, both happen, in the order that allows it.
        def moves(
            off: str, cause: str, turn_off: Callable[[], object], turn_on: Callable[[], object]
        ) -> None:
            pinned, other = ("echo-a", "beta") if off == "alpha" else ("echo-b", "alpha")
            turn_off()
            moved = _wait(
                f"echo-c from {off} to {other}",
                lambda: (m := status()["echo-c"])["state"] == "RUNNING" and m["node"] == other
                and m["last_probe"]["healthy"] and m,
            )  # fmt: skip
            assert moved["restarts_by_reason"].get(cause) == 1, moved
            down = _wait(
                f"{pinned} reported down with the reason",
                lambda: (m := status()[pinned])["state"] != "RUNNING"
                and m["restarts_by_reason"].get(cause) == 1 and "no suitable node" in m["detail"] and m,
            )  # fmt: skip
            print(f"{pinned} while {off} is {cause}: {down['state']} {down['reason']}: {down['detail']}")
            turn_on()
            _wait(
                f"{pinned} back on {off}",
                lambda: (m := status()[pinned])["state"] == "RUNNING" and m["node"] == off,
                timeout=120,
            )  # fmt: skip
            print(f"{cause} handled at {time.monotonic() - began:.1f} s")

        def drain(node: str) -> None:
            node_id = lab.docker(
                lab.manager if node == "alpha" else lab.worker, "info", "-f", "{{.Swarm.NodeID}}"
            )
            moves(
                node, "node-drained",
                lambda: lab.docker(lab.manager, "node", "update", "--availability", "drain", node_id),
                lambda: lab.docker(lab.manager, "node", "update", "--availability", "active", node_id),
            )  # fmt: skip

        def switch_off_beta() -> None:
            moves("beta", "node-down", lambda: _lab("stop", "2"), lambda: _lab("start", "2"))

        if status()["echo-c"]["node"] == "alpha":
            drain("alpha")
            switch_off_beta()
        else:
            switch_off_beta()
            drain("alpha")
    finally:
        _stop(watch)

    # 5. swarm down: nothing of the stack is left on either node
    out = _run(*orchestrator, "swarm", "down", *where, "--manager", lab.manager, "--timeout", "120")
    assert out.strip() == f"stack {STACK} removed", out
    label = f"label=com.docker.stack.namespace={STACK}"
    for engine in (lab.manager, lab.worker):
        assert lab.docker(engine, "ps", "-aq", "--filter", label) == ""
    for kind in ("service", "network", "secret", "config"):
        assert lab.docker(lab.manager, kind, "ls", "-q", "--filter", label) == "", kind
    print(f"the swarm test took {time.monotonic() - began:.1f} s (plus the lab's start and removal)")


def _status_at(lab: Lab, netns: str, address: str) -> dict[str, dict[str, Any]]:
    """The orchestrator's /status, fetched from inside a node's network namespace."""
    text = _run(
        "nsenter", f"--net={netns}", "--", sys.executable, "-S", "-c",
        "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())",
        f"http://{address}:{STATUS_PORT}/status", timeout=30,
    )  # fmt: skip
    return {m["name"]: m for m in json.loads(text)["miners"]}


@pytest.fixture
def orchestrator_image(lab: Lab) -> Iterator[str]:
    """This tree's orchestrator image under a tag of this test's own (other tests may build the shared
    `minerfleet/orchestrator` from another tree meanwhile); untagged afterwards."""
    tag = f"minerfleet/orchestrator:swarmtest-{os.getpid()}"
    base = _run("bash", "scripts/images.sh", "--base", timeout=600).strip().splitlines()[-1]
    env = (
        {}
        if shutil.which("docker-buildx") or _quiet("docker", "buildx", "version")
        else {"DOCKER_BUILDKIT": "0"}
    )
    started = time.monotonic()
    build = ["docker", "build", "-q", "--target", "orchestrator", "--build-arg", f"BASE_IMAGE={base}"]
    _run(*build, "-t", tag, ".", timeout=1800, env=env)
    print(f"orchestrator image {tag} in {time.monotonic() - started:.1f} s")
    try:
        yield tag
    finally:
        _run("docker", "rmi", tag, check=False)


def _quiet(*args: str) -> bool:
    return subprocess.run(list(args), capture_output=True, timeout=60).returncode == 0


def test_the_orchestrator_as_the_stacks_service_and_a_stopped_node(
    lab: Lab, orchestrator_image: str, tmp_path: Path
) -> None:
    """The rendered default: the orchestrator runs as the stack's service on the manager (its image
    loaded there, its user in the group of the manager's docker socket), its status API on the manager's
    address. It adopts the miners, restarts one killed on the worker, and handles the worker switched
    off (every process of that node killed): the pinned miner is reported down with the reason, one
    placed by labels moves; both run on the worker again once it is back."""
    began = time.monotonic()
    project = tmp_path / "project"
    config = make_project(project, _fleet(lab), keys=False, model=False)
    where = ["--config", str(config), "--project-dir", str(project)]
    orchestrator = [sys.executable, "-m", "orchestrator"]
    manager_address = "10.213.0.1"

    def status() -> dict[str, dict[str, Any]]:
        # from the worker's namespace: the status API answers at the manager's address
        return _status_at(lab, lab.worker_netns, manager_address)

    try:
        env = {"MINERFLEET_STATUS_HOST": manager_address, "MINERFLEET_ORCHESTRATOR_IMAGE": orchestrator_image}
        out = lab.in_manager(*orchestrator, "swarm", "up", *where, "--manager", lab.manager,
                             "--timeout", "120", env=env)  # fmt: skip
        print(out)
        print(f"swarm up (service orchestrator) took {time.monotonic() - began:.1f} s")
        assert "node beta: loaded minerfleet/orchestrator" not in out, out  # managers only
        stack = (project / "docker-stack.yml").read_text(encoding="utf-8")
        assert "user: ${MINERFLEET_UID:-1000}:${MINERFLEET_DOCKER_GID:-0}\n" in stack

        # its one task runs on the manager as uid 1000 in the socket's group, and adopts every miner
        socket_gid = os.stat(lab.manager.removeprefix("unix://")).st_gid
        service = lab.docker(lab.manager, "ps", "-q", "--filter", "label=minerfleet.role=orchestrator")
        assert service, "no orchestrator container on the manager"
        ids = lab.docker(lab.manager, "exec", service, "sh", "-c", "id -u; id -g").split()
        assert ids == ["1000", str(socket_gid)], ids
        seen = _wait(
            "the service orchestrator adopts every miner and probes it",
            lambda: (s := status()) and all(
                m["state"] == "RUNNING" and (m["last_probe"] or {}).get("healthy") for m in s.values()
            ) and s,
        )  # fmt: skip
        assert all(m["reason"] == "adopted" or m["restarts"] == 0 for m in seen.values()), seen
        assert (seen["echo-b"]["node"], seen["echo-b"]["address"]) == ("beta", "10.213.0.2")

        # a miner killed on the worker: restarted by the service orchestrator, with the reason
        container = lab.docker(lab.worker, "ps", "-q", "--filter", "label=minerfleet.miner=echo-b")
        lab.docker(lab.worker, "kill", container)
        restarted = _wait(
            "echo-b restarted after its kill",
            lambda: (m := status()["echo-b"])["state"] == "RUNNING"
            and m["restarts_by_reason"].get("killed:SIGKILL") == 1 and m,
        )  # fmt: skip
        assert restarted["node"] == "beta"
        print(f"kill handled at {time.monotonic() - began:.1f} s")

        # the worker switched off: echo-b (pinned there) is reported down with the node named;
        # echo-c moves to the manager if it ran there (placed by labels)
        c_was_on = status()["echo-c"]["node"]
        _lab("stop", "2")
        down = _wait(
            "echo-b reported down with the node's reason",
            lambda: (m := status()["echo-b"])["state"] != "RUNNING"
            and m["restarts_by_reason"].get("node-down") == 1 and m,
        )  # fmt: skip
        assert any("node beta (10.213.0.2) is down" in h["detail"] for h in down["history"]), down
        print(f"echo-b while beta is off: {down['state']} {down['reason']}: {down['detail']}")
        moved = _wait(
            "echo-c running on the manager",
            lambda: (m := status()["echo-c"])["state"] == "RUNNING" and m["node"] == "alpha"
            and m["last_probe"]["healthy"] and m,
        )  # fmt: skip
        if c_was_on == "beta":
            assert moved["restarts_by_reason"].get("node-down") == 1, moved
        assert status()["echo-a"]["state"] == "RUNNING"
        print(f"node stop handled at {time.monotonic() - began:.1f} s (echo-c was on {c_was_on})")

        _lab("start", "2")
        _wait(
            "echo-b back on beta",
            lambda: (m := status()["echo-b"])["state"] == "RUNNING" and m["node"] == "beta"
            and m["last_probe"]["healthy"],
            timeout=120,
        )  # fmt: skip
        print(f"node start handled at {time.monotonic() - began:.1f} s")
    finally:
        if not _node_up(lab.worker):
            _lab("start", "2")
        out = _run(*orchestrator, "swarm", "down", *where, "--manager", lab.manager, "--timeout", "120")
        lab.docker(lab.manager, "rmi", orchestrator_image)  # the node's copy of this test's image
    assert out.strip() == f"stack {STACK} removed", out
    label = f"label=com.docker.stack.namespace={STACK}"
    for engine in (lab.manager, lab.worker):
        assert lab.docker(engine, "ps", "-aq", "--filter", label) == ""
    print(f"the service-orchestrator test took {time.monotonic() - began:.1f} s")


def _node_up(engine: str) -> bool:
    return subprocess.run(["docker", "-H", engine, "info"], capture_output=True, timeout=30).returncode == 0


def _rolling_fleet(max_tokens: int, broken: str | None = None) -> str:
    """Four echo miners, two pinned to each node, replaced one at a time."""
    miners = "\n".join(
        f"  - {{name: m-{i}, hotkey: m-{i}, node: {node}, axon_port: {port}"
        + (", echo: {fail_after_tokens: 0}" if f"m-{i}" == broken else "")
        + "}"
        for i, (node, port) in enumerate(
            [("alpha", 8091), ("alpha", 8092), ("beta", 8091), ("beta", 8092)], start=1
        )
    )
    return f"""
network: local
wallet_path: ./wallets
project: {STACK}
status_api: {{port: {STATUS_PORT}}}
probe: {{interval: 2, timeout: 4, prompt: "are you there"}}
restart: {{start_grace: 5, backoff_initial: 1, backoff_max: 4}}
rollout: {{max_unavailable: 1, wait: 60}}
nodes:
  alpha: {{address: 10.213.0.1, engine: "{{manager}}"}}
  beta: {{address: 10.213.0.2, engine: "{{worker}}"}}
defaults: {{wallet: fleet, backend: echo, max_tokens: {max_tokens}, stop_on_forward_exception: false}}
miners:
{miners}
"""


def test_a_rolling_update_on_the_swarm_keeps_three_of_four_answering(lab: Lab, tmp_path: Path) -> None:
    """`rollout --runtime swarm`: a changed fleet file reaches the swarm one miner at a time (the stack
    deployed a part at a time, Swarm's stop-first update per service), each gated on its stream probe at
    its node's address, while a validator asking all four from the manager's namespace sees at least three
    answer in every round; the watch counts no restart for it. A miner that cannot stream stops the
    rollout with the rest on the old revision, and the rollback restores it."""
    from tests.rounds import WORDS

    began = time.monotonic()
    project = tmp_path / "project"

    def fleet(max_tokens: int, broken: str | None = None) -> str:
        text = _rolling_fleet(max_tokens, broken)
        return text.replace("{manager}", lab.manager).replace("{worker}", lab.worker)

    config = make_project(project, fleet(64), keys=False, model=False)
    where = ["--config", str(config), "--project-dir", str(project)]
    orchestrator = [sys.executable, "-m", "orchestrator"]
    miners = [f"m-{i}={host}:{port}" for i, (host, port) in enumerate(
        [("10.213.0.1", 8091), ("10.213.0.1", 8092), ("10.213.0.2", 8091), ("10.213.0.2", 8092)], start=1
    )]  # fmt: skip
    asking = [sys.executable, "-m", "tests.rounds", str(project), *miners]

    def once() -> dict[str, str]:
        return dict(json.loads(lab.in_manager(*asking, "--once", timeout=60).splitlines()[-1]))

    def rollout(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net={lab.netns}", "--", *orchestrator, "rollout", "--runtime", "swarm",
             "--manager", lab.manager, *args, *where],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, **LAB_ENV, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    watch: subprocess.Popen[bytes] | None = None
    try:
        out = lab.in_manager(*orchestrator, "swarm", "up", *where, "--manager", lab.manager,
                             "--orchestrator", "host", "--timeout", "120")  # fmt: skip
        print(out)
        assert set(once().values()) == {WORDS}
        watch = _start_watch(lab, where, tmp_path / "state.json")
        _wait(
            "the watch adopts every miner",
            lambda: all(m["state"] == "RUNNING" for m in _status_at(lab, lab.netns, "127.0.0.1").values()),
        )

        # 1. every miner changed (shorter answers): replaced one at a time, three of four always answering
        assert rollout("--save").returncode == 0
        config.write_text(fleet(3))
        lab.in_manager(*orchestrator, "render", *where)
        validator = subprocess.Popen(
            ["nsenter", f"--net={lab.netns}", "--", *asking], cwd=ROOT, stdout=subprocess.PIPE, text=True,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert validator.stderr is not None and validator.stderr.readline().strip() == "asking"
        time.sleep(2)
        done = rollout()
        time.sleep(1)
        validator.send_signal(signal.SIGTERM)
        answering = json.loads(validator.communicate(timeout=60)[0].splitlines()[-1])  # after its logs
        print(done.stderr)
        print(f"answering per round during the rollout: {answering}")
        assert done.returncode == 0, done.stderr
        assert "4 of 4 miners changed" in done.stderr and "rollout done: 4 miner(s) replaced" in done.stderr
        assert len(answering) >= 5 and min(answering) >= 3, answering
        assert set(once().values()) == {"one two three "}
        seen = _status_at(lab, lab.netns, "127.0.0.1")
        assert all(m["restarts"] == 0 for m in seen.values()), seen
        print(f"rolled at {time.monotonic() - began:.1f} s")

        # nothing changed: nothing replaced
        again = rollout()
        assert again.returncode == 0 and "0 of 4 miners changed" in again.stderr, again.stderr

        # 2. a miner that cannot stream stops the rollout; the rollback restores it
        assert rollout("--save").returncode == 0
        config.write_text(fleet(5, broken="m-1"))
        lab.in_manager(*orchestrator, "render", *where)
        stopped = rollout()
        assert stopped.returncode == 1 and "stopped: m-1 did not stream" in stopped.stderr, stopped.stderr
        answers = once()
        assert {answers[n] for n in ("m-2", "m-3", "m-4")} == {"one two three "}, answers
        back = rollout("--rollback")
        assert back.returncode == 0, back.stderr
        assert set(once().values()) == {"one two three "}
        print(f"stopped and rolled back at {time.monotonic() - began:.1f} s")
    finally:
        _stop(watch)
        out = _run(*orchestrator, "swarm", "down", *where, "--manager", lab.manager, "--timeout", "120")
    assert out.strip() == f"stack {STACK} removed", out
