"""The fleet file's `nodes:` and placement: ports unique per node, GPUs per node, file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.fleet.load import FleetInvalid, load_fleet
from tests.fleets import make_project

F = "config/miners.yaml"

TWO_NODES = """
network: local
wallet_path: ./wallets
nodes:
  alpha: {address: 10.213.0.1, labels: {pool: echo}}
  beta: {address: 10.213.0.2, labels: {pool: echo, gpu: "yes"}, gpus: [0, 1]}
defaults: {wallet: fleet, backend: echo}
miners:
"""


def _load(tmp_path: Path, text: str) -> object:
    return load_fleet(make_project(tmp_path, text), tmp_path)


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(FleetInvalid) as info:
        _load(tmp_path, text)
    return [message.replace(f"{tmp_path}/", "") for message in info.value.messages()]


def test_same_port_on_two_nodes_is_fine_and_placement_is_resolved(tmp_path: Path) -> None:
    loaded = load_fleet(
        make_project(
            tmp_path,
            TWO_NODES
            + """
  - {name: a, hotkey: a, node: alpha, axon_port: 8091}
  - {name: b, hotkey: b, node: beta, axon_port: 8091}
  - {name: c, hotkey: c, node_labels: {pool: echo}, axon_port: 8092}
""",
        ),
        tmp_path,
    )
    placements = {m.name: m.placement for m in loaded.miners}
    assert placements["a"].candidates == ("alpha",)
    assert placements["a"].constraints() == ["node.labels.minerfleet.node == alpha"]
    assert placements["c"].candidates == ("alpha", "beta")
    assert placements["c"].constraints() == ["node.labels.pool == echo"]


def test_ports_clash_on_a_node_a_labelled_miner_may_land_on(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        TWO_NODES
        + """
  - {name: a, hotkey: a, node: beta, axon_port: 8091}
  - {name: c, hotkey: c, node_labels: {gpu: "yes"}, axon_port: 8091}
""",
    )
    assert errors == [
        f"{F}:10: miners[1].axon_port: port 8091 is already used on node beta by miner 'a' (line 9); "
        "fix: choose another axon_port"
    ]


def test_placement_errors_name_the_line_and_the_fix(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        TWO_NODES
        + """
  - {name: a, hotkey: a, node: alfa}
  - {name: b, hotkey: b, node_labels: {pool: gpu}}
  - {name: c, hotkey: c, node: alpha, image: cuda, gpus: [1], llamacpp: {}}
""",
    )
    assert errors[0] == f"{F}:9: miners[0].node: unknown node 'alfa'; fix: did you mean 'alpha'?"
    assert errors[1] == (
        f"{F}:10: miners[1].node_labels: no node under `nodes:` has the labels pool=gpu; fix: add them to "
        "a node's `labels:`, or change node_labels"
    )
    assert any("node alpha has no GPU 1 (its gpus: [])" in e for e in errors), errors


def test_node_without_nodes_and_duplicate_addresses(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        """
network: local
wallet_path: ./wallets
defaults: {wallet: fleet, backend: echo}
miners:
  - {name: a, hotkey: a, node: alpha}
""",
    )
    assert errors == [
        f"{F}:5: miners[0].node: `node:` places it on a swarm node, but the fleet has no `nodes:`; fix: "
        "list the swarm's machines under `nodes:` (name: {address: ...}), or remove it"
    ]
    errors = _errors(
        tmp_path,
        """
network: local
wallet_path: ./wallets
nodes:
  alpha: {address: 10.213.0.1}
  beta: {address: 10.213.0.1}
defaults: {wallet: fleet, backend: echo}
miners:
  - {name: a, hotkey: a}
""",
    )
    assert errors == [
        f"{F}:5: nodes.beta.address: address 10.213.0.1 is already node alpha's; fix: give each node its "
        "own address (the one it joined the swarm with)"
    ]
