"""Fleet files built to hurt: an alias bomb, absurd nesting, a number Python will not read. Each is one
``error:`` line with file:line, field and fix, exit 2, and memory stays bounded (nothing is expanded)."""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.commands import cli
from orchestrator.fleet import located as yamlsource
from tests.fleets import make_key, make_project

F = "config/miners.yaml"
ROOT = Path(__file__).resolve().parents[2]


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level an anchored list of ``width`` aliases to the level below (~5 KB at 9x9
    with long names; expands to width**levels values)."""
    lines = [f"lol0: &lol0 [{', '.join(['laugh'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nnetwork: local\nminers: *lol{levels}\n"


def merge_bomb(levels: int = 40) -> str:
    """The same with merge keys: each mapping merges the one below twice (flatten_mapping copies pairs)."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}")
    return "\n".join(lines) + f"\nnetwork: local\ndefaults: *m{levels}\nminers: []\n"


def _validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[int, list[str]]:
    # keys=False: the helper would read these files with PyYAML itself; make the keys one uses here.
    make_project(tmp_path, text, keys=False)
    make_key(tmp_path / "wallets", "probe", "default")
    make_key(tmp_path / "wallets", "fleet", "one")
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    code = cli.main(["validate"], out=io.StringIO(), err=err)
    return code, err.getvalue().splitlines()


@pytest.mark.parametrize("bomb", [billion_laughs(), merge_bomb()], ids=["aliases", "merge-keys"])
def test_an_alias_bomb_is_refused_before_it_expands(bomb: str) -> None:
    with pytest.raises(yamlsource.YamlTooLarge) as caught:
        yamlsource.load(bomb)
    assert "expands to more than 100,000 values" in caught.value.problem
    assert caught.value.line > 1 and caught.value.path  # where it crossed the limit


def test_an_alias_bomb_is_one_error_line_with_exit_2_and_bounded_memory(tmp_path: Path) -> None:
    """In a child with a 2 GiB address-space cap: before the fix it grew without bound (4.9 GB in 60 s)."""
    fleet = make_project(tmp_path, billion_laughs(), keys=False)
    assert len(fleet.read_bytes()) < 6000

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", "--config", str(fleet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )
    assert done.returncode == cli.EXIT_INVALID, done.stderr[-2000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {fleet}:"), lines
    assert "alias bomb" in lines[0] and "; fix: " in lines[0]


def test_the_watch_reads_the_same_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(tmp_path, billion_laughs(), keys=False)
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    assert cli.main(["watch", "--runtime", "docker"], out=io.StringIO(), err=err) == cli.EXIT_INVALID
    assert len(err.getvalue().splitlines()) == 1 and "alias bomb" in err.getvalue()


def test_a_5001_digit_integer_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, lines = _validate(
        tmp_path,
        monkeypatch,
        f"""
        network: local
        wallet_path: ./wallets
        defaults: {{wallet: fleet, backend: echo}}
        miners:
          - name: one
            hotkey: one
            axon_port: {"9" * 5001}
        """,
    )
    assert code == cli.EXIT_INVALID
    assert lines == [
        f"error: {F}:7: miners[0].axon_port: a number of 5,001 digits is too long to read (the limit is "
        "4,300); fix: write a sensible value, or quote it if it is meant as text"
    ]


def test_a_long_but_readable_number_is_shown_by_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, lines = _validate(
        tmp_path,
        monkeypatch,
        f"""
        network: local
        wallet_path: ./wallets
        defaults: {{wallet: fleet, backend: echo}}
        miners:
          - name: one
            hotkey: one
            axon_port: {"9" * 4000}
        """,
    )
    assert code == cli.EXIT_INVALID
    assert len(lines) == 1 and len(lines[0]) < 200, lines
    assert lines[0].startswith(f"error: {F}:7: miners[0].axon_port: a number of 4,000 digits is out of range")


@pytest.mark.parametrize("depth", [100, 3000])
def test_absurd_nesting_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    code, lines = _validate(tmp_path, monkeypatch, "network: local\nminers: " + "[" * depth + "]" * depth)
    assert code == cli.EXIT_INVALID
    assert len(lines) == 1 and "nested more than 64 levels deep" in lines[0], lines


def test_a_fleet_with_many_miners_is_not_mistaken_for_a_bomb() -> None:
    miners = "".join(
        f"  - {{name: m{i}, hotkey: m{i}, axon_port: {9000 + i}, <<: *common}}\n" for i in range(2000)
    )
    doc = yamlsource.load(f"common: &common {{wallet: fleet, backend: echo}}\nminers:\n{miners}")
    assert len(doc.data["miners"]) == 2000 and doc.data["miners"][-1]["backend"] == "echo"
    assert not doc.problems
