"""Every backend and every protocol is described once, and every list of them is derived from that.

The registries: ``services.miner.backends.SPECS`` (one ``BackendSpec`` per backend module) and
``services.miner.protocolspec.PROTOCOL_SPECS`` (one ``ProtocolSpec`` per protocol). The places that list
backends or protocols (the settings' allowed values and groups, ``--help``, the fleet file's options and
JSON schema, the image targets, the check of model files, the axon's routes, the chat's decoding, the
protocol table in ``services/miner/protocols.py``) are compared with the registries here, and a child
Python with one fake extra spec registered shows it in each of them.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_args

import pytest

from orchestrator.fleet import json_schema
from orchestrator.fleet import options as fleet_options
from orchestrator.fleet.checks.files import ONE_FILE_MODELS
from orchestrator.render.compose import TARGETS
from services.miner import backends, httpdoor, protocols, protocolspec, signed
from services.miner.backends.spec import Memory
from services.miner.settings import AuthScheme, BackendName, MinerSettings, ProtocolName, describe_settings

ROOT = Path(__file__).resolve().parents[2]
BACKEND_NAMES = [spec.name for spec in backends.SPECS.values()]
PROTOCOL_NAMES = [spec.name for spec in protocolspec.PROTOCOL_SPECS]


# --- described once ------------------------------------------------------------------------------------


def test_every_backend_module_declares_one_spec_and_is_registered() -> None:
    shared = {"base", "spec"}
    modules = [m.name for m in pkgutil.iter_modules(backends.__path__) if m.name not in shared]
    assert sorted(modules) == sorted(BACKEND_NAMES)  # one module per backend, named after it
    for name in modules:
        tree = ast.parse((Path(backends.__path__[0]) / f"{name}.py").read_text())
        specs = [
            node
            for node in tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SPEC" for t in node.targets)
        ]
        assert len(specs) == 1, name
        assert getattr(backends, name).SPEC is backends.SPECS[BackendName(name)]


def test_names_are_unique() -> None:
    assert len(set(BACKEND_NAMES)) == len(BACKEND_NAMES) == len(backends.SPECS)
    assert len(set(PROTOCOL_NAMES)) == len(PROTOCOL_NAMES) == len(protocolspec.SPECS)
    classes = [name for spec in protocolspec.PROTOCOL_SPECS for name, _ in spec.routes]
    assert len(set(classes)) == len(classes)  # one protocol per synapse class (the axon's route)


def test_the_http_door_is_no_protocol_of_the_registry() -> None:
    assert httpdoor.DOOR_PROTOCOL not in protocolspec.SPECS  # its requests are decoded as plain chats
    assert list(signed.SCHEMES) == list(get_args(AuthScheme))  # the door's schemes: named once


def test_every_synapse_class_serves_exactly_one_protocol() -> None:
    defined = {
        name
        for name, obj in vars(protocols).items()
        if isinstance(obj, type) and obj.__module__ == protocols.__name__ and not name.startswith("_")
    }
    routed = {name for spec in protocolspec.PROTOCOL_SPECS for name, _ in spec.routes}
    assert routed == defined
    assert {name: cls.__name__ for name, cls in protocols.PROTOCOLS.items()} == {
        spec.name: spec.synapse for spec in protocolspec.PROTOCOL_SPECS
    }
    assert {name: [(c.__name__, r) for c, r in routes] for name, routes in protocols.ROUTES.items()} == {
        spec.name: list(spec.routes) for spec in protocolspec.PROTOCOL_SPECS
    }


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_no_module_outside_its_own_names_a_backend_or_a_protocol() -> None:
    """A name as a string of its own (``"llamacpp"``, ``"einstein"``), as code compares or lists it;
    prose in a description does not count."""
    miner = ROOT / "services" / "miner"
    for path in sorted(miner.rglob("*.py")):
        named = _string_constants(path)
        if path.parent != miner / "backends":
            assert not named & set(BACKEND_NAMES), path
        if path.name != "protocolspec.py":
            assert not named & set(PROTOCOL_NAMES), path
    for relative in ("orchestrator/fleet/checks/files.py", "orchestrator/fleet/options.py"):
        named = _string_constants(ROOT / relative)
        assert not named & set(BACKEND_NAMES + PROTOCOL_NAMES), relative


# --- every list derives from the registries ---------------------------------------------------------------


def test_the_settings_allow_the_registered_names() -> None:
    assert [member.value for member in BackendName] == BACKEND_NAMES
    assert list(get_args(ProtocolName)) == PROTOCOL_NAMES
    fields = MinerSettings.model_fields
    assert [name for name in fields if name in BACKEND_NAMES] == BACKEND_NAMES
    for spec in backends.SPECS.values():
        assert fields[spec.name].annotation is spec.settings
    schema = MinerSettings.model_json_schema()
    assert schema["$defs"]["BackendName"]["enum"] == BACKEND_NAMES
    assert schema["properties"]["protocols"]["items"]["enum"] == PROTOCOL_NAMES
    help_text = describe_settings()
    for name in BACKEND_NAMES:
        assert f"MINER_{name.upper()}__" in help_text


def test_the_fleet_file_derives_from_the_registries() -> None:
    assert list(fleet_options.BACKEND_GROUPS) == BACKEND_NAMES
    assert [
        name for name in fleet_options.MinerOptions.model_fields if name in BACKEND_NAMES
    ] == BACKEND_NAMES
    for schema in (json_schema(), json.loads((ROOT / "config" / "miners.schema.json").read_text())):
        defs = schema["$defs"]
        assert defs["BackendName"]["enum"] == BACKEND_NAMES
        protocols_option = defs["MinerSpec"]["properties"]["protocols"]["anyOf"][0]
        assert protocols_option["items"]["enum"] == PROTOCOL_NAMES


def test_images_and_model_checks_derive_from_the_backends() -> None:
    for spec in backends.SPECS.values():
        assert spec.image in TARGETS
        if spec.gpu_image is not None:
            assert spec.gpu_image in TARGETS
        if spec.image_target is not None:
            assert TARGETS[spec.image] == spec.image_target
    assert {spec.name for spec in backends.SPECS.values() if spec.memory is Memory.gguf} == ONE_FILE_MODELS


def test_the_protocol_table_lists_the_registry() -> None:
    rows = re.findall(r"^\| ``([a-z-]+)`` +\| ``(\w+)`` +\|", protocols.__doc__ or "", re.M)
    assert rows == [(spec.name, spec.synapse) for spec in protocolspec.PROTOCOL_SPECS]


# --- a fake extra spec shows up everywhere --------------------------------------------------------------

# A child Python loads the registry's module with one more spec appended after the registry's own
# statement, then prints every derived list.
_CHILD = r"""
import importlib.abc, importlib.util, json, sys

PATCHES = json.loads(sys.argv[1])

class Patched(importlib.abc.MetaPathFinder, importlib.abc.SourceLoader):
    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            real = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        self.origin = real.origin
        return importlib.util.spec_from_file_location(
            fullname, real.origin, loader=self, submodule_search_locations=real.submodule_search_locations
        )

    def get_filename(self, fullname):
        return self.origin

    def get_data(self, path):
        anchor, addition = PATCHES[self.name_of(path)]
        source = open(path, encoding="utf-8").read()
        assert source.count(anchor) == 1, anchor
        return source.replace(anchor, anchor + addition).encode()

    def name_of(self, path):
        return next(name for name in PATCHES if name.replace(".", "/") in path)

sys.meta_path.insert(0, Patched())
"""


def _run_child(tmp_path: Path, patches: dict[str, tuple[str, str]], body: str) -> dict[str, Any]:
    script = _CHILD + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(patches)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


FAKE_BACKEND = '''
from pydantic import Field

from services.miner.backends.echo import EchoBackend
from services.miner.backends.spec import BackendSpec, Memory
from services.miner.groups import SettingsGroup


class FakeSettings(SettingsGroup):
    """A backend registered by the test only."""

    knob: int = Field(1, ge=1, description="A setting of its own.")


SPEC = BackendSpec(
    name="fake",
    settings=FakeSettings,
    create=EchoBackend,
    summary="a backend registered by the test",
    image="fakeimg",
    image_target="miner-fake",
    memory=Memory.gguf,
)
'''


@pytest.mark.timeout(180)
def test_a_fake_backend_shows_up_everywhere(tmp_path: Path) -> None:
    (tmp_path / "fake_backend.py").write_text(FAKE_BACKEND)
    anchor = "_ALL: tuple[BackendSpec, ...] = (echo.SPEC, llamacpp.SPEC, hf.SPEC, openai.SPEC)\n"
    addition = '_ALL = (*_ALL, __import__("fake_backend").SPEC)\n'
    seen = _run_child(
        tmp_path,
        {"services.miner.backends": (anchor, addition)},
        """
        from orchestrator.fleet import json_schema
        from orchestrator.fleet import options
        from orchestrator.fleet.checks.files import ONE_FILE_MODELS
        from orchestrator.render.compose import TARGETS
        from services.miner.errors import ConfigError
        from services.miner.settings import BACKEND_CHOICES, BackendName, describe_settings, load_settings

        settings = load_settings({"MINER_BACKEND": "fake", "MINER_FAKE__KNOB": "3"})
        try:
            load_settings({"MINER_BACKEND": "fake", "MINER_FAKE__KNOB": "0"})
            error = ""
        except ConfigError as exc:
            error = str(exc)
        schema = json_schema()["$defs"]
        print(json.dumps({
            "backend_names": [m.value for m in BackendName],
            "chosen": [settings.backend.value, settings.fake.knob],
            "error": error,
            "help": "MINER_FAKE__KNOB" in describe_settings(),
            "choices": BACKEND_CHOICES,
            "option_groups": list(options.BACKEND_GROUPS),
            "options": "fake" in options.MinerOptions.model_fields,
            "schema_enum": schema["BackendName"]["enum"],
            "schema_group": "fake" in schema["MinerSpec"]["properties"],
            "targets": TARGETS.get("fakeimg"),
            "one_file": "fake" in ONE_FILE_MODELS,
        }))
        """,
    )
    names = [*BACKEND_NAMES, "fake"]
    assert seen == {
        "backend_names": names,
        "chosen": ["fake", 3],
        "error": seen["error"],
        "help": True,
        "choices": "echo, llamacpp, hf, openai or fake.",
        "option_groups": names,
        "options": True,
        "schema_enum": names,
        "schema_group": True,
        "targets": "miner-fake",
        "one_file": True,
    }
    assert seen["error"].startswith("MINER_FAKE__KNOB:")  # the variable of that backend's own group


@pytest.mark.timeout(180)
def test_a_fake_protocol_shows_up_everywhere(tmp_path: Path) -> None:
    anchor = "    ),\n)\n"  # the end of the registry's tuple
    addition = (
        "PROTOCOL_SPECS = (*PROTOCOL_SPECS, ProtocolSpec(name='fake-proto', subnet='a test', "
        "routes=(('StreamCoreSynapse', Route.stream),), question=decode_einstein))\n"
    )
    seen = _run_child(
        tmp_path,
        {"services.miner.protocolspec": (anchor, addition)},
        """
        from orchestrator.fleet import json_schema
        from services.miner.chat import build_chat
        from services.miner.protocols import PROTOCOLS, ROUTES
        from services.miner.settings import PROTOCOL_CHOICES, load_settings

        settings = load_settings({"MINER_PROTOCOLS": '["fake-proto"]'})
        chat = build_chat(["user"], ["question_text=Why&question_type=why"], system_prompt="S",
                          protocol="fake-proto")
        schema = json_schema()["$defs"]["MinerSpec"]["properties"]["protocols"]["anyOf"][0]
        print(json.dumps({
            "settings": settings.protocols,
            "choices": PROTOCOL_CHOICES,
            "schema_enum": schema["items"]["enum"],
            "routes": [cls.__name__ for cls, _ in ROUTES["fake-proto"]],
            "stream": PROTOCOLS["fake-proto"].__name__,
            "chat": [[m.role, m.content] for m in chat],
        }))
        """,
    )
    assert seen == {
        "settings": ["fake-proto"],
        "choices": "Synapses served: prompting, einstein, text-prompting, fake-proto.",
        "schema_enum": [*PROTOCOL_NAMES, "fake-proto"],
        "routes": ["StreamCoreSynapse"],
        "stream": "StreamCoreSynapse",
        "chat": [["system", "S\nThe question type is: why."], ["user", "Why"]],
    }
