"""The stack as deployed (runtimes/swarm/stack.py): what makes a unit's revision change, and what not."""

from __future__ import annotations

from pathlib import Path

from orchestrator.runtimes.swarm.stack import IMAGE_LABEL, annotate, only, revisions, substitute

STACK = {
    "services": {
        "m-1": {
            "image": "minerfleet/miner:cpu",
            "env_file": ["config/generated/m-1.env"],
            "environment": {"HOTKEY_SECRET": "${NAME_HOTKEY_M_1}"},
            "secrets": [{"source": "hotkey-m-1", "target": "/wallets/x"}],
            "labels": {"minerfleet.miner": "m-1"},
            "deploy": {"replicas": 1, "labels": {"minerfleet.miner": "m-1"}},
        },
        "m-2": {
            "image": "minerfleet/miner:cpu",
            "env_file": ["config/generated/m-2.env"],
            "deploy": {"replicas": 1},
        },
        "orchestrator": {"image": "${MINERFLEET_ORCHESTRATOR_IMAGE:-minerfleet/orchestrator}", "deploy": {}},
    },
    "secrets": {"hotkey-m-1": {"file": "./wallets/x", "name": "${NAME_HOTKEY_M_1}"}},
}


def _project(tmp_path: Path, one: str = "A=1\n", two: str = "A=2\n") -> Path:
    generated = tmp_path / "config/generated"
    generated.mkdir(parents=True, exist_ok=True)
    (generated / "m-1.env").write_text(one)
    (generated / "m-2.env").write_text(two)
    return tmp_path


def _revisions(project: Path, env: dict[str, str], ids: dict[str, str] | None = None) -> dict[str, str]:
    images = ids or {"minerfleet/miner:cpu": "sha256:aaa", "minerfleet/orchestrator": "sha256:ooo"}
    return revisions(annotate(STACK, project, env, images.get))


def test_compose_variables_are_filled_in_with_their_defaults() -> None:
    assert substitute("${A}-${B:-b}-${C-c}-${D}", {"A": "a", "C": "x"}) == "a-b-x-"


def test_a_revision_follows_the_env_file_the_image_and_the_secrets_name_only(tmp_path: Path) -> None:
    env = {"NAME_HOTKEY_M_1": "fleet_hotkey-m-1_0123"}
    base = _revisions(_project(tmp_path), env)
    assert len(set(base.values())) == 3 and all(len(r) == 16 for r in base.values())
    assert _revisions(_project(tmp_path), env) == base  # stable

    changed = _revisions(_project(tmp_path, one="A=3\n"), env)
    assert changed["m-1"] != base["m-1"] and changed["m-2"] == base["m-2"]
    _project(tmp_path)

    rotated = _revisions(tmp_path, {"NAME_HOTKEY_M_1": "fleet_hotkey-m-1_4567"})
    assert rotated["m-1"] != base["m-1"] and rotated["m-2"] == base["m-2"]

    rebuilt = _revisions(tmp_path, env, {"minerfleet/miner:cpu": "sha256:bbb"})
    assert rebuilt["m-1"] != base["m-1"] and rebuilt["m-2"] != base["m-2"]


def test_the_image_id_goes_on_the_containers_and_the_rendered_stack_is_left_alone(tmp_path: Path) -> None:
    stack = annotate(STACK, _project(tmp_path), {}, {"minerfleet/orchestrator": "sha256:ooo"}.get)
    assert stack["services"]["orchestrator"]["labels"] == {IMAGE_LABEL: "sha256:ooo"}
    assert IMAGE_LABEL not in stack["services"]["m-1"]["labels"]  # no id: no label
    assert "minerfleet.revision" not in STACK["services"]["m-1"]["deploy"]["labels"]
    assert list(only(stack, ["m-2", "orchestrator"])["services"]) == ["m-2", "orchestrator"]
    assert only(stack, ["m-2"])["secrets"] == STACK["secrets"]
