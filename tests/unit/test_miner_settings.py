"""load_settings(environ=..., env_file=...): typed parsing, the env file, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from services.miner.errors import ConfigError
from services.miner.settings import (
    BackendName,
    MinerSettings,
    Network,
    describe_settings,
    load_settings,
    read_env_file,
)

API_KEY = "sk-live-7f3a9c0d1e2b4a65"


def config_error(environ: dict[str, str], env_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, env_file=env_file)
    message = str(info.value)
    assert "\n" not in message, f"a config error must be one line, got {message!r}"
    return message


def all_variables() -> list[str]:
    """Every MINER_* variable, walked from the model independently of describe_settings()."""
    names = []
    for name, field in MinerSettings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [f"MINER_{name.upper()}__{sub.upper()}" for sub in annotation.model_fields]
        else:
            names.append(f"MINER_{name.upper()}")
    return names


def test_empty_environment_gives_the_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.network is Network.local
    assert settings.backend is BackendName.echo
    assert settings.protocols == ["prompting"]
    assert settings.allowed_hotkeys == []
    assert settings.stop_on_forward_exception is False


def test_os_environ_is_not_read_when_an_environment_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINER_NAME", "from-the-shell")
    assert load_settings(environ={}).name == "miner"
    assert load_settings(environ={"MINER_NAME": "given"}).name == "given"


def test_nested_group_variables() -> None:
    settings = load_settings(
        environ={
            "MINER_BACKEND": "llamacpp",
            "MINER_LLAMACPP__MODEL_PATH": "/models/gemma.gguf",
            "MINER_LLAMACPP__N_GPU_LAYERS": "-1",
            "MINER_ECHO__FAIL_AFTER_TOKENS": "3",
        }
    )
    assert settings.backend is BackendName.llamacpp
    assert settings.llamacpp.model_path == Path("/models/gemma.gguf")
    assert settings.llamacpp.n_gpu_layers == -1
    assert settings.llamacpp.n_ctx == 2048  # untouched siblings keep their defaults
    assert settings.echo.fail_after_tokens == 3


def test_variable_names_are_case_insensitive() -> None:
    settings = load_settings(environ={"miner_netuid": "35", "MINER_Llamacpp__N_Ctx": "4096"})
    assert settings.netuid == 35
    assert settings.llamacpp.n_ctx == 4096


def test_other_variables_are_ignored() -> None:
    settings = load_settings(environ={"PATH": "/usr/bin", "MINERS": "x", "HOME": "/root"})
    assert settings.name == "miner"


def test_lists_are_json() -> None:
    settings = load_settings(
        environ={
            "MINER_PROTOCOLS": '["prompting", "einstein", "text-prompting"]',
            "MINER_ALLOWED_HOTKEYS": '["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "5Fake"]',
        }
    )
    assert settings.protocols == ["prompting", "einstein", "text-prompting"]
    assert settings.allowed_hotkeys == ["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "5Fake"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("false", False), ("False", False), ("TRUE", True), ("0", False), ("1", True)],
)
def test_booleans_are_parsed_strictly(raw: str, expected: bool) -> None:
    settings = load_settings(environ={"MINER_STOP_ON_FORWARD_EXCEPTION": raw, "MINER_OPENAI__USE_CHAT": raw})
    assert settings.stop_on_forward_exception is expected
    assert settings.openai.use_chat is expected


def test_a_word_that_is_not_a_boolean_is_an_error() -> None:
    message = config_error({"MINER_STOP_ON_FORWARD_EXCEPTION": "maybe"})
    assert message.startswith("MINER_STOP_ON_FORWARD_EXCEPTION:")
    assert "'maybe'" in message


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "miner.env"
    env_file.write_text("MINER_NAME=from-file\nMINER_NETUID=7\n")
    settings = load_settings(environ={"MINER_NAME": "from-env"}, env_file=env_file)
    assert settings.name == "from-env"
    assert settings.netuid == 7


def test_env_file_comments_quotes_and_export(tmp_path: Path) -> None:
    env_file = tmp_path / "miner.env"
    env_file.write_text(
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "export MINER_NAME=exported\n"
        'MINER_SYSTEM_PROMPT="Answer briefly. Don\'t ramble."\n'
        "MINER_WALLET_NAME='single quoted'\n"
        'MINER_PROTOCOLS=["prompting", "einstein"]\n'
        "MINER_CHAIN_ENDPOINT = ws://127.0.0.1:9944?a=b\n"
    )
    settings = load_settings(environ={}, env_file=env_file)
    assert settings.name == "exported"
    assert settings.system_prompt == "Answer briefly. Don't ramble."
    assert settings.wallet_name == "single quoted"
    assert settings.protocols == ["prompting", "einstein"]
    assert settings.chain_endpoint == "ws://127.0.0.1:9944?a=b"  # only the first "=" separates


def test_env_file_line_without_equals_names_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / "miner.env"
    env_file.write_text("MINER_NAME=ok\nthis is not a setting\n")
    message = config_error({}, env_file=env_file)
    assert f"{env_file}:2" in message


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError, match=r"nope\.env"):
        read_env_file(missing)


def test_unknown_variable_is_named() -> None:
    message = config_error({"MINER_BATCH_SIZE": "12"})
    assert message.startswith("MINER_BATCH_SIZE:")
    assert "unknown setting" in message


def test_unknown_variable_inside_a_group_is_named() -> None:
    message = config_error({"MINER_LLAMACPP__MODEL": "/m.gguf"})
    assert message.startswith("MINER_LLAMACPP__MODEL:")
    assert "not permitted" in message


def test_unknown_variable_in_the_env_file_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / "miner.env"
    env_file.write_text("MINER_TYPO=1\n")
    assert config_error({}, env_file=env_file).startswith("MINER_TYPO:")


def test_batch_size_over_200_is_refused() -> None:
    message = config_error({"MINER_STREAMING_BATCH_SIZE": "201"})
    assert message.startswith("MINER_STREAMING_BATCH_SIZE:")
    assert "200" in message
    assert "'201'" in message
    assert load_settings(environ={"MINER_STREAMING_BATCH_SIZE": "200"}).streaming_batch_size == 200


def test_unknown_backend_is_refused() -> None:
    message = config_error({"MINER_BACKEND": "vllm"})
    assert message.startswith("MINER_BACKEND:")
    assert "'vllm'" in message
    assert "llamacpp" in message  # says what would have been accepted


def test_unknown_protocol_is_refused() -> None:
    message = config_error({"MINER_PROTOCOLS": '["prompting", "chat"]'})
    assert message.startswith("MINER_PROTOCOLS:")
    assert "'chat'" in message


def test_duplicate_protocol_is_refused() -> None:
    assert config_error({"MINER_PROTOCOLS": '["prompting", "prompting"]'}).startswith("MINER_PROTOCOLS:")


def test_empty_protocol_list_is_refused() -> None:
    assert config_error({"MINER_PROTOCOLS": "[]"}).startswith("MINER_PROTOCOLS:")


@pytest.mark.parametrize("raw", ["prompting", "['prompting']", '["prompting",'])
def test_a_list_that_is_not_json_is_refused(raw: str) -> None:
    message = config_error({"MINER_PROTOCOLS": raw})
    assert message.startswith("MINER_PROTOCOLS:")
    assert "JSON list" in message


def test_a_json_value_that_is_not_a_list_is_refused() -> None:
    assert config_error({"MINER_ALLOWED_HOTKEYS": '"5Grwva"'}).startswith("MINER_ALLOWED_HOTKEYS:")


def test_a_group_given_a_plain_value_is_refused() -> None:
    message = config_error({"MINER_LLAMACPP": "/models/x.gguf"})
    assert message.startswith("MINER_LLAMACPP:")


def test_bad_value_in_a_group_names_the_nested_variable() -> None:
    message = config_error({"MINER_OPENAI__REQUEST_TIMEOUT": "soon"})
    assert message.startswith("MINER_OPENAI__REQUEST_TIMEOUT:")
    assert "'soon'" in message


def test_api_key_is_kept_secret() -> None:
    settings = load_settings(environ={"MINER_OPENAI__API_KEY": API_KEY})
    assert settings.openai.api_key.get_secret_value() == API_KEY
    assert API_KEY not in repr(settings)
    assert API_KEY not in str(settings.openai)


@pytest.mark.parametrize(
    "extra",
    [
        {"MINER_OPENAI__REQUEST_TIMEOUT": "-1"},
        {"MINER_OPENAI__MODEL": "m", "MINER_OPENAI__USE_CHAT": "perhaps"},
        {"MINER_OPENAI": "not-a-group"},
        {"MINER_BACKEND": "nope"},
    ],
)
def test_api_key_never_appears_in_error_messages(extra: dict[str, str]) -> None:
    # The key first, the bad value after, and the other way round: neither order may leak it.
    for environ in ({"MINER_OPENAI__API_KEY": API_KEY, **extra}, {**extra, "MINER_OPENAI__API_KEY": API_KEY}):
        with pytest.raises(ConfigError) as info:
            load_settings(environ=environ)
        assert API_KEY not in str(info.value)


def test_a_mistyped_api_key_name_is_named_without_its_value() -> None:
    message = config_error({"MINER_OPENAI__APIKEY": API_KEY})
    assert message.startswith("MINER_OPENAI__APIKEY:")
    assert API_KEY not in message


def test_help_text_lists_every_setting_with_a_description() -> None:
    text = describe_settings()
    lines = text.splitlines()
    for variable in all_variables():
        matching = [line for line in lines if line.split()[0] == variable]
        assert len(matching) == 1, f"{variable} is missing from --help"
        assert "[default:" in matching[0]
        described = matching[0].split(None, 1)[1].split("[default:")[0].strip()
        assert described, f"{variable} has no description"
    assert len(lines) == len(all_variables())
    # Spot checks, so the walk above cannot quietly agree with a wrong implementation.
    for variable in ("MINER_LLAMACPP__MODEL_PATH", "MINER_STREAMING_BATCH_SIZE", "MINER_OPENAI__API_KEY"):
        assert variable in text


def test_help_text_masks_the_api_key_default() -> None:
    line = next(line for line in describe_settings().splitlines() if "MINER_OPENAI__API_KEY" in line)
    assert "[default: ***]" in line
    assert "not-needed" not in describe_settings()


def test_hotkey_file_is_under_the_wallet_path(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "MINER_WALLET_PATH": str(tmp_path),
            "MINER_WALLET_NAME": "fleet",
            "MINER_WALLET_HOTKEY": "m1",
        }
    )
    assert settings.hotkey_file == tmp_path / "fleet" / "hotkeys" / "m1"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValueError):
        settings.name = "changed"  # type: ignore[misc]


# --- allowed_hotkey_files: the probe's address, read from its pub.txt at start-up ------------------


def test_allowed_hotkey_files_add_their_addresses_to_the_gatekeeper(tmp_path: Path) -> None:
    from services.miner.app import read_allowed_hotkey_files
    from services.miner.chain import build_gatekeeper

    pub = tmp_path / "defaultpub.txt"
    pub.write_text('{"accountId": "0x00", "ss58Address": "5ProbeAddress"}', encoding="utf-8")
    settings = load_settings(
        environ={"MINER_ALLOWED_HOTKEYS": '["5Other"]', "MINER_ALLOWED_HOTKEY_FILES": f'["{pub}"]'}
    )
    assert settings.allowed_hotkey_files == [pub]
    addresses = read_allowed_hotkey_files(settings)
    assert addresses == ["5ProbeAddress"]
    gatekeeper, _ = build_gatekeeper(settings, wallet=None, extra_allowed=addresses)
    assert gatekeeper.blacklist("5ProbeAddress") == (False, "allowed hotkey")
    assert gatekeeper.blacklist("5Other") == (False, "allowed hotkey")
    assert gatekeeper.blacklist("5Stranger")[0] is True


@pytest.mark.parametrize("content", [None, "not json", '{"accountId": "0x00"}', '{"ss58Address": 5}'])
def test_a_missing_or_bad_allowed_hotkey_file_is_a_one_line_config_error(
    tmp_path: Path, content: str | None
) -> None:
    from services.miner.app import read_allowed_hotkey_files

    pub = tmp_path / "probe" / "hotkeys" / "defaultpub.txt"
    if content is not None:
        pub.parent.mkdir(parents=True)
        pub.write_text(content, encoding="utf-8")
    settings = load_settings(environ={"MINER_ALLOWED_HOTKEY_FILES": f'["{pub}"]'})
    with pytest.raises(ConfigError) as info:
        read_allowed_hotkey_files(settings)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("MINER_ALLOWED_HOTKEY_FILES: ")
    assert str(pub) in message


def test_a_missing_allowed_hotkey_file_names_the_fix(tmp_path: Path) -> None:
    from services.miner.app import read_allowed_hotkey_files

    settings = load_settings(environ={"MINER_ALLOWED_HOTKEY_FILES": f'["{tmp_path / "nopub.txt"}"]'})
    with pytest.raises(ConfigError, match=r"python -m orchestrator wallets"):
        read_allowed_hotkey_files(settings)
