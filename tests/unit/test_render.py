"""Render: golden files for the shipped fleet, determinism, no secrets, no coldkeys, the probe allowed.

The golden files in tests/golden/ are the shipped config/miners.yaml rendered with the deterministic test
wallets of tests/fleets.py. After an intended change, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py -k golden
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.commands import cli
from orchestrator.fleet.load import LoadedFleet, load_fleet
from orchestrator.render import (
    COMPOSE_FILE,
    GENERATED_DIR,
    STACK_FILE,
    SUPERVISOR_FILE,
    RenderError,
    compose_hash,
    compose_staleness,
    probe_ss58,
    render,
    write,
)
from services.miner.settings import MinerSettings, load_settings, read_env_file
from tests.fleets import GOLDEN, SHIPPED_FLEET, make_project, shipped_project

# The fleet schema declares the miner settings of issues 9 and 10 (max_concurrency, limits, warmup, ...)
# ahead of services/miner/settings.py, which gets them from the miner stream: until both are merged, the
# rendered env files carry variables this branch's miner does not know yet.
NEW_SETTINGS = {"max_concurrency", "limits", "warmup", "max_connections", "header_timeout"}
needs_new_settings = pytest.mark.skipif(
    not NEW_SETTINGS <= set(MinerSettings.model_fields),
    reason="the miner's new settings (services/miner/settings.py) are not merged into this branch yet",
)

SECRET = "sk-secret-0123456789abcdefXYZ"

OPENAI_WITH_KEY = """
network: local
wallet_path: ./wallets
probe: {wallet: probe, hotkey: default}
defaults: {wallet: fleet}
miners:
  - name: remote-1
    hotkey: remote-1
    backend: openai
    openai:
      base_url: https://api.example.com/v1
      model: some-model
      api_key_env: OPENAI_API_KEY
  - name: gpu-1
    hotkey: gpu-1
    backend: llamacpp
    gpus: [0, 1]
    llamacpp: {model: big, n_gpu_layers: -1}
models:
  big: {path: /opt/models/big.gguf}
"""


def _load(root: Path, **kwargs: bool) -> LoadedFleet:
    return load_fleet(root / "config" / "miners.yaml", root, **kwargs)


def test_golden_files_for_the_shipped_fleet(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    files = render(_load(tmp_path))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for old in GOLDEN.glob("*"):
            if old.name != "README.md":
                old.unlink()
        for path, text in files.items():
            (GOLDEN / path.name).write_text(text, encoding="utf-8")
    expected = {p.name for p in GOLDEN.iterdir() if p.name != "README.md"}
    assert {path.name for path in files} == expected
    for path, text in files.items():
        assert text == (GOLDEN / path.name).read_text(encoding="utf-8"), (
            f"{path} differs from tests/golden/{path.name}; if intended, regenerate with "
            "UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py -k golden"
        )


def test_rendering_twice_and_elsewhere_gives_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "project", tmp_path / "b" / "elsewhere"
    shipped_project(first)
    shipped_project(second)
    once = render(_load(first))
    assert render(_load(first)) == once
    assert render(_load(second)) == once  # nothing of the machine's paths leaks in
    write(_load(first), once)
    written = {p: (first / p).read_bytes() for p in once}
    write(_load(first), render(_load(first)))
    assert {p: (first / p).read_bytes() for p in once} == written


def test_no_rendered_file_holds_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    make_project(tmp_path, OPENAI_WITH_KEY)
    (tmp_path / "opt-models").mkdir()
    fleet = (
        (tmp_path / "config" / "miners.yaml")
        .read_text()
        .replace("/opt/models/big.gguf", str(tmp_path / "opt-models" / "big.gguf"))
    )
    (tmp_path / "config" / "miners.yaml").write_text(fleet)
    (tmp_path / "opt-models" / "big.gguf").touch()
    files = render(_load(tmp_path))
    for path, text in files.items():
        assert SECRET not in text, path
    compose = yaml.safe_load(files[COMPOSE_FILE])
    environment = compose["services"]["remote-1"]["environment"]
    assert environment == {"HOME": "/tmp", "MINER_OPENAI__API_KEY": "${OPENAI_API_KEY}"}
    assert "MINER_OPENAI__API_KEY" not in files[GENERATED_DIR / "remote-1.env"].replace("# MINER_OPENAI", "")
    supervisor = files[SUPERVISOR_FILE]
    assert '/bin/sh -c \'MINER_OPENAI__API_KEY="${OPENAI_API_KEY}" exec ' in supervisor


def test_gpu_miners_get_the_cuda_image_and_their_devices(tmp_path: Path) -> None:
    make_project(tmp_path, OPENAI_WITH_KEY.replace("/opt/models/big.gguf", "elsewhere/big.gguf"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big.gguf").touch()
    files = render(_load(tmp_path))
    service = yaml.safe_load(files[COMPOSE_FILE])["services"]["gpu-1"]
    assert service["image"] == "minerfleet/miner:cuda"
    assert service["build"]["target"] == "miner-cuda"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0", "1"], "capabilities": ["gpu"]}]
    # a model outside ./models is mounted on its own, read-only
    assert "./elsewhere/big.gguf:/models-extra/big/big.gguf:ro" in service["volumes"]
    env = read_env_file_text(files[GENERATED_DIR / "gpu-1.env"])
    assert env["MINER_LLAMACPP__MODEL_PATH"] == "/models-extra/big/big.gguf"
    assert env["MINER_LLAMACPP__N_GPU_LAYERS"] == "-1"
    assert 'CUDA_VISIBLE_DEVICES="0,1"' in files[SUPERVISOR_FILE]


def read_env_file_text(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_miners_mount_only_their_hotkey_and_coldkeypub_read_only(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    compose = yaml.safe_load(render(loaded)[COMPOSE_FILE])
    for name, service in compose["services"].items():
        if name == "init":  # the one-shot that creates the local keys: it writes the wallet folder
            continue
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert not source.endswith("/coldkey") and not target.endswith("/coldkey"), (name, volume)
            assert "coldkey" not in source or source.endswith("/coldkeypub.txt"), (name, volume)
            if (name, volume) not in {
                ("orchestrator", "/var/run/docker.sock:/var/run/docker.sock"),
                ("orchestrator", "./state:/app/state"),  # its decisions survive its restarts
                ("prometheus", "./state:/app/state"),  # the monitoring profile's data (state/prometheus)
            }:
                assert volume.endswith(":ro"), (name, volume)
    for miner in loaded.miners:
        volumes = compose["services"][miner.name]["volumes"]
        wallet_mounts = [v for v in volumes if v.startswith("./wallets/")]
        assert wallet_mounts == [
            f"./wallets/{miner.wallet}/hotkeys/{miner.hotkey}:/wallets/{miner.wallet}/hotkeys/{miner.hotkey}:ro",
            f"./wallets/{miner.wallet}/coldkeypub.txt:/wallets/{miner.wallet}/coldkeypub.txt:ro",
            "./wallets/probe/hotkeys/defaultpub.txt:/wallets/probe/hotkeys/defaultpub.txt:ro",
        ]
        assert compose["services"][miner.name]["restart"] == "no"
        assert compose["services"][miner.name]["labels"]["minerfleet.miner"] == miner.name


def test_probe_hotkey_is_allowed_by_every_miner_through_its_public_file(tmp_path: Path) -> None:
    # The env files name the probe's pub.txt (mounted read-only) instead of embedding its address: they
    # do not depend on this machine's keys, so they are committed, and render needs no key at all.
    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    probe = probe_ss58(loaded)
    files = render(loaded)
    for miner in loaded.miners:
        env = read_env_file_text(files[GENERATED_DIR / f"{miner.name}.env"])
        assert "MINER_ALLOWED_HOTKEYS" not in env
        assert probe not in files[GENERATED_DIR / f"{miner.name}.env"]
        assert json.loads(env["MINER_ALLOWED_HOTKEY_FILES"]) == ["/wallets/probe/hotkeys/defaultpub.txt"]
        volumes = yaml.safe_load(files[COMPOSE_FILE])["services"][miner.name]["volumes"]
        assert "./wallets/probe/hotkeys/defaultpub.txt:/wallets/probe/hotkeys/defaultpub.txt:ro" in volumes


def test_everything_starts_after_init_which_runs_the_init_command(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    compose = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])
    init = compose["services"].pop("init")
    assert init["command"] == ["python", "-m", "orchestrator", "init", "--config", "config/miners.yaml"]
    assert init["restart"] == "no"
    for name, service in compose["services"].items():
        assert service["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name
    # the orchestrator reads the miners' addresses from their public files, never their secret keys
    volumes = compose["services"]["orchestrator"]["volumes"]
    assert "./wallets/fleet/hotkeys/gemma-1pub.txt:/wallets/fleet/hotkeys/gemma-1pub.txt:ro" in volumes
    assert not any(v.startswith("./wallets/fleet/hotkeys/gemma-1:") for v in volumes)


def test_render_needs_no_key(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    shutil.rmtree(tmp_path / "wallets")
    loaded = _load(tmp_path, check_files=False)
    files = render(loaded)
    assert GENERATED_DIR / "gemma-1.env" in files


@needs_new_settings
def test_env_files_are_valid_miner_settings_in_docker_and_on_the_host(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    write(loaded, render(loaded))
    for miner in loaded.miners:
        env_file = tmp_path / GENERATED_DIR / f"{miner.name}.env"
        settings = load_settings(environ={}, env_file=env_file)  # as compose passes it
        assert settings.name == miner.name
        assert settings.axon_port == miner.axon_port
        assert str(settings.wallet_path) == "/wallets"
        assert read_env_file(env_file)["MINER_NAME"] == miner.name


@needs_new_settings
def test_supervisord_conf_runs_each_miner_with_host_paths(tmp_path: Path) -> None:
    from supervisor.options import ServerOptions

    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    write(loaded, render(loaded))
    options = ServerOptions()
    options.configfile = str(tmp_path / SUPERVISOR_FILE)
    options.process_config(do_usage=False)
    programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(programs) == {"model-server", *(m.name for m in loaded.miners)}
    here = tmp_path / "config" / "generated"
    for miner in loaded.miners:
        program = programs[miner.name]
        assert program.command.endswith(f"-m services.miner --env-file {here}/{miner.name}.env")
        assert program.autorestart is False
        assert Path(program.environment["MINER_WALLET_PATH"]).resolve() == (tmp_path / "wallets").resolve()
        settings = load_settings(environ=program.environment, env_file=here / f"{miner.name}.env")
        assert settings.hotkey_file.resolve() == loaded.hotkey_file(miner.wallet, miner.hotkey).resolve()
        probe_pub = loaded.hotkey_file("probe", "default").with_name("defaultpub.txt")
        assert [p.resolve() for p in settings.allowed_hotkey_files] == [probe_pub.resolve()]
        if settings.llamacpp.model_path is not None:
            assert settings.llamacpp.model_path.resolve() == (tmp_path / "models/gemma-3-270m-q4_k_m.gguf")
        if miner.uses_model_server:
            assert settings.openai.base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose 1.29 is not installed")
def test_docker_compose_1_29_accepts_the_rendered_file(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    write(loaded, render(loaded))
    result = subprocess.run(
        [
            "docker-compose",
            "--project-directory",
            str(tmp_path),
            "-f",
            str(tmp_path / COMPOSE_FILE),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_stale_compose_file_is_reported_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = shipped_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["validate"], out=out, err=err) == cli.EXIT_OK
    assert "not rendered yet" in err.getvalue()
    assert cli.main(["render"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    assert compose_hash(tmp_path / COMPOSE_FILE) == _load(tmp_path).sha256
    assert cli.main(["render", "--check"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    err = io.StringIO()
    assert cli.main(["validate"], out=io.StringIO(), err=err) == cli.EXIT_OK
    assert err.getvalue() == ""

    path.write_text(path.read_text().replace("max_tokens: 128", "max_tokens: 100"))
    err = io.StringIO()
    assert cli.main(["validate"], out=io.StringIO(), err=err) == cli.EXIT_FAILED
    assert err.getvalue().startswith("error: docker-compose.yml is STALE: config/miners.yaml changed")
    assert compose_staleness(_load(tmp_path)).stale
    assert cli.main(["render", "--check"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_FAILED


def test_render_removes_env_files_of_removed_miners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = shipped_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    assert (tmp_path / GENERATED_DIR / "echo-1.env").exists()
    text = path.read_text()
    start = text.index("  # No model at all")
    end = text.index("  # Its own copy of Gemma")
    path.write_text(text[:start] + text[end:])
    assert cli.main(["render"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    assert not (tmp_path / GENERATED_DIR / "echo-1.env").exists()


def test_wallets_creates_missing_local_keys_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(
        tmp_path,
        """
        network: local
        wallet_path: ./wallets
        defaults: {wallet: fleet, backend: echo}
        miners:
          - {name: one, hotkey: one}
          - {name: two, hotkey: two}
        """,
        keys=False,
    )
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert cli.main(["wallets"], out=out, err=io.StringIO()) == cli.EXIT_OK
    created = [line for line in out.getvalue().splitlines() if line.startswith("created")]
    assert len(created) == 5  # two coldkeys (probe, fleet), three hotkeys
    for hotkey in ("probe/hotkeys/default", "fleet/hotkeys/one", "fleet/hotkeys/two", "fleet/coldkeypub.txt"):
        assert (tmp_path / "wallets" / hotkey).is_file()
    out = io.StringIO()
    assert cli.main(["wallets"], out=out, err=io.StringIO()) == cli.EXIT_OK
    assert all(line.startswith("ok") for line in out.getvalue().splitlines())
    assert cli.main(["validate"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK


def test_wallets_on_a_chain_only_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(
        tmp_path,
        """
        network: finney
        netuid: 1
        wallet_path: ./wallets
        defaults: {wallet: fleet, backend: echo}
        miners:
          - {name: one, hotkey: one}
        """,
        keys=False,
    )
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["wallets"], out=out, err=err) == cli.EXIT_FAILED
    assert not (tmp_path / "wallets").exists()
    command = "btcli wallet new_hotkey --wallet.name fleet --wallet.hotkey one"
    assert f"missing wallets/fleet/hotkeys/one: run `{command}`" in out.getvalue()
    assert err.getvalue().startswith("error: some keys are missing")


def test_wallets_replaces_the_empty_directories_docker_leaves_for_missing_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(
        tmp_path,
        """
        network: local
        wallet_path: ./wallets
        defaults: {wallet: fleet, backend: echo}
        miners:
          - {name: one, hotkey: one}
        """,
        keys=False,
    )
    stub = tmp_path / "wallets" / "fleet" / "hotkeys" / "one"
    stub.mkdir(parents=True)  # what `docker compose up` does for a bind-mounted file that is missing
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert cli.main(["wallets"], out=out, err=io.StringIO()) == cli.EXIT_OK
    assert f"removed the empty directory docker left at {stub}" in out.getvalue()
    assert stub.is_file()


def test_wallets_hands_local_keys_to_the_containers_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (as CI and `make up` on a fresh machine run)")
    make_project(
        tmp_path,
        """
        network: local
        wallet_path: ./wallets
        defaults: {wallet: fleet, backend: echo}
        miners:
          - {name: one, hotkey: one}
        """,
        keys=False,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINERFLEET_UID", "4321")
    monkeypatch.setenv("MINERFLEET_GID", "4322")
    assert cli.main(["wallets"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    for key in (
        "fleet/hotkeys/one",
        "fleet/hotkeys/onepub.txt",
        "fleet/coldkeypub.txt",
        "probe/hotkeys/default",
    ):
        st = (tmp_path / "wallets" / key).stat()
        assert (st.st_uid, st.st_gid) == (4321, 4322), key
    coldkey = (tmp_path / "wallets" / "fleet" / "coldkey").stat()
    assert coldkey.st_uid == 0  # the coldkey is never handed over


def test_wallets_hand_over_gives_root_made_btcli_keys_to_the_containers_user_on_a_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (as CI and `make up` on a fresh machine run)")
    make_project(
        tmp_path,
        """
        network: finney
        wallet_path: ./wallets
        defaults: {wallet: fleet, backend: echo}
        miners:
          - {name: one, hotkey: one}
        """,
    )
    coldkey = tmp_path / "wallets" / "fleet" / "coldkey"
    coldkey.write_text("the operator's coldkey", encoding="utf-8")
    coldkey.chmod(0o600)
    for key in (tmp_path / "wallets").rglob("*"):
        if key.is_file():
            key.chmod(0o600)  # as btcli leaves them, owned by root
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINERFLEET_UID", "4321")
    monkeypatch.setenv("MINERFLEET_GID", "4322")
    out = io.StringIO()
    assert cli.main(["wallets"], out=out, err=io.StringIO()) == cli.EXIT_FAILED  # unreadable: said, how
    assert "unreadable for the containers (uid 4321)" in out.getvalue() and "--hand-over" in out.getvalue()
    assert cli.main(["wallets", "--hand-over"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    for key in ("fleet/hotkeys/one", "fleet/hotkeys/onepub.txt", "fleet/coldkeypub.txt"):
        st = (tmp_path / "wallets" / key).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4321, 4322, 0o600), key
    assert coldkey.stat().st_uid == 0  # the coldkey is never handed over


def test_the_committed_rendered_files_match_the_shipped_fleet() -> None:
    # They are committed so `docker compose up` works right after a clone: they must not go stale.
    root = SHIPPED_FLEET.parent.parent
    loaded = load_fleet(SHIPPED_FLEET, root, check_files=False)
    for path, text in render(loaded).items():
        assert (root / path).read_text(encoding="utf-8") == text, (
            f"{path} is not up to date with {SHIPPED_FLEET.name}: run `python -m orchestrator render`"
        )


TWO_SERVERS = """
network: local
wallet_path: ./wallets
models: {gemma: {gguf: gemma-3-270m-q4_k_m}}
model_servers:
  small: {model: gemma, port: 8000, slots: 8, ctx_per_slot: 512, n_threads: 2}
  big: {model: gemma, port: 8001, slots: 3, resources: {memory: 2g, cpus: 2.5}}
defaults:
  wallet: fleet
  backend: openai
  openai: {model_server: small}
  warmup: false
  max_connections: 64
  header_timeout: 5
  first_chunk_delay: 0.1
  limits: {max_messages: 16, on_too_long: trim}
  resources: {pids: 128}
miners:
  - {name: a, hotkey: a}
  - {name: b, hotkey: b}
  - {name: c, hotkey: c, max_concurrency: 7, limits: {max_prompt_chars: 9000}}
  - {name: d, hotkey: d, openai: {model_server: big, health_url: "http://big:8001/health"}}
  - {name: e, hotkey: e, backend: echo, resources: {memory: 200m}}
  - {name: f, hotkey: f, backend: llamacpp, llamacpp: {model: gemma, n_threads: 1}}
"""


def test_model_servers_render_as_llama_server_services_shared_by_their_miners(tmp_path: Path) -> None:
    make_project(tmp_path, TWO_SERVERS)
    files = render(_load(tmp_path))
    services = yaml.safe_load(files[COMPOSE_FILE])["services"]
    small, big = services["model-server-small"], services["model-server-big"]
    assert small["command"] == [
        "/usr/local/bin/llama-server", "--model", "/models/gemma-3-270m-q4_k_m.gguf", "--alias", "gemma",
        "--host", "0.0.0.0", "--port", "8000", "--parallel", "8", "--ctx-size", "4096",
        "--threads", "2", "--cont-batching", "--metrics", "--swa-checkpoints", "0",
    ]  # fmt: skip
    assert "--threads" not in big["command"]  # llama.cpp's own choice
    assert small["labels"] == {
        "minerfleet.project": "minerfleet",
        "minerfleet.role": "model-server",
        "minerfleet.model_server": "small",
    }
    assert small["restart"] == "no" and small["ports"] == ["127.0.0.1:8000:8000"]
    assert services["a"]["depends_on"]["model-server-small"] == {"condition": "service_started"}
    assert "model-server-small" not in services["d"]["depends_on"]
    env = {name: read_env_file_text(files[GENERATED_DIR / f"{name}.env"]) for name in "abcdef"}
    # small's 8 slots shared by need by a, b, c (any may take them all) unless a miner says otherwise;
    # big's 3 slots for d; admission asks each server how many are free
    assert [env[n].get("MINER_MAX_CONCURRENCY") for n in "abcdef"] == ["8", "8", "7", "3", None, None]
    assert [env[n].get("MINER_OPENAI__SERVER_SLOTS") for n in "abcdef"] == ["8", "8", "8", "3", None, None]
    assert env["a"]["MINER_OPENAI__BASE_URL"] == "http://model-server-small:8000/v1"
    assert env["d"]["MINER_OPENAI__BASE_URL"] == "http://model-server-big:8001/v1"
    assert env["d"]["MINER_OPENAI__HEALTH_URL"] == "http://big:8001/health"
    # the new settings pass through, defaults under the miner's own (groups key by key)
    for name in "abcdef":
        assert env[name]["MINER_WARMUP"] == "false"
        assert env[name]["MINER_MAX_CONNECTIONS"] == "64"
        assert env[name]["MINER_HEADER_TIMEOUT"] == "5.0"
        assert env[name]["MINER_FIRST_CHUNK_DELAY"] == "0.1"
        assert env[name]["MINER_LIMITS__MAX_MESSAGES"] == "16"
        assert env[name]["MINER_LIMITS__ON_TOO_LONG"] == "trim"
    assert env["c"]["MINER_LIMITS__MAX_PROMPT_CHARS"] == "9000"
    assert "MINER_LIMITS__MAX_PROMPT_CHARS" not in env["a"]
    # supervisord runs the same servers with the host's llama-server, on 127.0.0.1
    supervisor = files[SUPERVISOR_FILE]
    assert "[program:model-server-big]\ncommand=llama-server --model %(here)s/../../models/" in supervisor
    assert "--host 127.0.0.1 --port 8001 --parallel 3 --ctx-size 3072 --cont-batching" in supervisor


def test_compose_services_are_hardened_with_limits_by_backend_and_model_size(tmp_path: Path) -> None:
    make_project(tmp_path, TWO_SERVERS)
    services = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])["services"]
    assert "init" not in services.pop("init")  # the one-shot that creates keys runs as root, briefly
    for name, service in services.items():
        assert service["init"] is True, name
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"], name
        if service["image"] != "minerfleet/miner:cpu" or name in "abcdef":
            assert service["environment"]["HOME"] == "/tmp", name  # bittensor makes ~/.bittensor at import
    limits = {
        name: (s["mem_limit"], s.get("cpus"), s["pids_limit"]) for name, s in services.items()
    }  # fmt: skip
    assert limits == {
        # the bundled model (241 MiB) + KV for 8 * 512 tokens + 256 MiB, rounded up to 64 MiB
        # CPUs: no quota (its threads bound its CPU; a quota would only throttle its decoding)
        "model-server-small": ("640m", None, 512),
        "model-server-big": ("2g", 2.5, 512),  # as written
        "a": ("384m", 1.0, 128),  # no model; pids from defaults
        "b": ("384m", 1.0, 128),
        "c": ("384m", 1.0, 128),
        "d": ("384m", 1.0, 128),
        "e": ("200m", 1.0, 128),
        "f": ("960m", 1.0, 128),  # + the model, its KV for n_ctx 2048 and compute buffers
        "orchestrator": ("512m", 1.0, 256),
        "prometheus": ("512m", 1.0, 256),  # the monitoring profile
    }


def test_an_in_process_model_miner_yields_the_cpu_to_the_model_servers_under_load(tmp_path: Path) -> None:
    make_project(tmp_path, TWO_SERVERS)
    services = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])["services"]
    assert services["f"]["cpu_shares"] == 256  # llamacpp: its own model, one answer at a time
    for name in ("model-server-small", "model-server-big", "a", "e"):
        assert "cpu_shares" not in services[name], name  # docker's even share


def test_a_llamacpp_miner_without_n_threads_gets_no_cpu_quota(tmp_path: Path) -> None:
    make_project(
        tmp_path, TWO_SERVERS.replace("llamacpp: {model: gemma, n_threads: 1}", "llamacpp: {model: gemma}")
    )
    services = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])["services"]
    assert "cpus" not in services["f"]  # llama.cpp spreads over every core; a quota would throttle it


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_model_servers_cpu_limit_is_above_its_thread_count(tmp_path: Path, threads: int) -> None:
    """llama-server needs CPU beside its compute threads (HTTP, sampling, batching): a quota equal to
    n_threads throttles decoding itself (one stream at 40% of its speed, measured in the stack). Its
    threads bound its CPU, so it gets no quota at all (unless resources.cpus says otherwise)."""
    make_project(tmp_path, TWO_SERVERS.replace("ctx_per_slot: 512, n_threads: 2}", f"n_threads: {threads}}}"))
    files = render(_load(tmp_path))
    server = yaml.safe_load(files[COMPOSE_FILE])["services"]["model-server-small"]
    assert server["command"][server["command"].index("--threads") + 1] == str(threads)
    assert "cpus" not in server  # no quota: nothing can throttle its decoding
    limits = yaml.safe_load(files[STACK_FILE])["services"]["model-server-small"]["deploy"]["resources"][
        "limits"
    ]
    assert "cpus" not in limits


def test_a_model_outside_the_bundle_is_sized_from_its_file_or_named_as_the_fix(tmp_path: Path) -> None:
    make_project(tmp_path, OPENAI_WITH_KEY.replace("/opt/models/big.gguf", "elsewhere/big.gguf"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big.gguf").write_bytes(b"\0" * (64 << 20))
    services = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])["services"]
    assert services["gpu-1"]["mem_limit"] == "768m"  # 384 + 64 + 17 (KV) + 256, rounded up
    (tmp_path / "elsewhere" / "big.gguf").unlink()
    with pytest.raises(RenderError, match=r"set `resources: \{memory: \.\.\.\}`"):
        render(_load(tmp_path, check_files=False))


def test_the_older_single_model_server_is_still_accepted(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        """
        network: local
        wallet_path: ./wallets
        models: {gemma: {gguf: gemma-3-270m-q4_k_m}}
        model_server: {model: gemma, port: 8005, n_ctx: 2048, n_threads: 1}
        defaults: {wallet: fleet, backend: openai, openai: {model_server: true}}
        miners:
          - {name: one, hotkey: one}
        """,
    )
    loaded = _load(tmp_path)
    files = render(loaded)
    (server,) = loaded.model_servers
    assert (server.name, server.service, server.ctx_per_slot, server.users) == (
        "model-server", "model-server", 2048, ("one",)
    )  # fmt: skip
    service = yaml.safe_load(files[COMPOSE_FILE])["services"]["model-server"]
    assert service["command"][service["command"].index("--ctx-size") + 1] == str(8 * 2048)
    assert service["labels"]["minerfleet.model_server"] == "model-server"
    env = read_env_file_text(files[GENERATED_DIR / "one.env"])
    assert env["MINER_OPENAI__BASE_URL"] == "http://model-server:8005/v1"
    assert env["MINER_MAX_CONCURRENCY"] == "8"


def test_supervisord_runs_the_llama_server_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped_project(tmp_path)
    loaded = _load(tmp_path)
    assert "command=llama-server --model" in render(loaded)[SUPERVISOR_FILE]  # PATH's, machine-independent
    built = render(loaded, llama_server="/opt/llama/bin/llama-server")[SUPERVISOR_FILE]
    assert "command=/opt/llama/bin/llama-server --model" in built
    relative = render(loaded, llama_server=".cache/llama-server")[SUPERVISOR_FILE]
    assert "command=%(here)s/../../.cache/llama-server --model" in relative
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINERFLEET_LLAMA_SERVER", "/srv/llama-server")
    assert cli.main(["render"], out=io.StringIO(), err=io.StringIO()) == cli.EXIT_OK
    assert "command=/srv/llama-server --model" in (tmp_path / SUPERVISOR_FILE).read_text()


def test_the_orchestrator_keeps_its_state_in_a_mounted_folder(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    services = yaml.safe_load(render(_load(tmp_path))[COMPOSE_FILE])["services"]
    orchestrator = services["orchestrator"]
    assert orchestrator["environment"]["MINERFLEET_STATE"] == "/app/state/orchestrator.json"
    assert "./state:/app/state" in orchestrator["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in orchestrator["volumes"]
    # init, as root, hands the folder docker creates to the containers' user
    assert "./state:/app/state" in services["init"]["volumes"]
    assert services["init"]["environment"]["MINERFLEET_STATE"] == "/app/state/orchestrator.json"


# --- no coldkey in any container (issue 22) -------------------------------------------------------


def _mounts(service: dict[str, object]) -> list[str]:
    """Every host source a service gets: bind mounts (``src:dst[:mode]``) and secrets' files."""
    volumes = [str(v).split(":")[0] for v in service.get("volumes", []) or []]  # type: ignore[union-attr]
    return volumes


@pytest.mark.parametrize("network", ["local", "test", "finney"])
def test_no_rendered_service_mounts_the_wallet_root_or_a_coldkey(tmp_path: Path, network: str) -> None:
    shipped = SHIPPED_FLEET.read_text(encoding="utf-8").replace("network: local ", f"network: {network} ")
    assert f"network: {network} " in shipped
    make_project(tmp_path, shipped)
    files = render(_load(tmp_path, check_files=False))
    compose = yaml.safe_load(files[COMPOSE_FILE])["services"]
    stack = yaml.safe_load(files[STACK_FILE])
    sources = [(name, src) for name, service in compose.items() for src in _mounts(service)]
    sources += [(f"secret {name}", str(spec["file"])) for name, spec in (stack.get("secrets") or {}).items()]
    wallet_sources = [(name, src) for name, src in sources if src.startswith("./wallets")]
    for name, src in wallet_sources:
        assert src.rstrip("/") != "./wallets", f"{name} mounts the wallet root"
        assert not src.endswith("/coldkey"), f"{name} mounts a coldkey: {src}"
        kind = src.removeprefix("./wallets/").split("/")
        if network == "local":  # init: the fleet's own wallet folders, where it makes the local keys
            allowed = (len(kind) == 1 and name == "init") or "hotkeys" in kind or kind[-1] == "coldkeypub.txt"
        else:  # a chain: only hotkeys and coldkeypub.txt, read-only, into the services that use them
            allowed = "hotkeys" in kind or kind[-1] == "coldkeypub.txt"
        assert allowed, f"{name} mounts {src}"
    init_wallets = [src for name, src in wallet_sources if name == "init"]
    if network == "local":
        assert sorted(init_wallets) == ["./wallets/fleet", "./wallets/probe"]
    else:
        assert init_wallets == []  # no wallet at all in init on a chain network
    for name, service in compose.items():
        if name == "init":
            continue
        for volume in service.get("volumes", []) or []:
            if str(volume).startswith("./wallets"):
                assert str(volume).endswith(":ro"), f"{name}: {volume} is not read-only"
