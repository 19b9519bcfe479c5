"""Gatekeeper (default deny, allowed hotkeys, the chain view), SubtensorChain on bittensor's own
MockSubtensor, and the SyncLoop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from bittensor.utils.mock.subtensor_mock import MockSubtensor
from bittensor_wallet import Keypair

from services.miner.blacklist import ALLOWED_PRIORITY, Gatekeeper, Neuron, SubtensorChain, SyncLoop

PROBE = "5ProbeHotkey"
VALIDATOR = "5Validator"
SMALL = "5SmallValidator"
MINER = "5PlainMiner"
STRANGER = "5Stranger"


class FakeChain:
    """A ChainView whose answer (or failure) the test sets."""

    def __init__(self, neurons: dict[str, Neuron] | None = None) -> None:
        self.view = dict(neurons or {})
        self.error: Exception | None = None
        self.calls = 0

    def neurons(self) -> dict[str, Neuron]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return dict(self.view)


def subnet() -> dict[str, Neuron]:
    return {
        VALIDATOR: Neuron(uid=0, stake=5000.0, validator_permit=True),
        SMALL: Neuron(uid=1, stake=20.0, validator_permit=True),
        MINER: Neuron(uid=2, stake=100.0, validator_permit=False),
    }


def synced(chain: FakeChain, *, require_validator_permit: bool = False, min_stake: float = 0.0) -> Gatekeeper:
    gatekeeper = Gatekeeper(
        allowed_hotkeys=[PROBE],
        chain=chain,
        require_validator_permit=require_validator_permit,
        min_stake=min_stake,
    )
    assert gatekeeper.sync() is True
    return gatekeeper


# --- local: no chain ---------------------------------------------------------------------------------


def test_local_denies_everyone_but_the_allowed_hotkeys() -> None:
    gatekeeper = Gatekeeper(allowed_hotkeys=[PROBE], chain=None)
    assert gatekeeper.blacklist(PROBE) == (False, "allowed hotkey")
    refused, reason = gatekeeper.blacklist(STRANGER)
    assert refused is True
    assert STRANGER in reason and "allowed_hotkeys" in reason


def test_local_with_no_allowed_hotkeys_denies_everyone() -> None:
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=None)
    assert gatekeeper.sync() is True  # nothing to sync, and nothing opened up by it
    assert gatekeeper.blacklist(VALIDATOR)[0] is True


@pytest.mark.parametrize("hotkey", [None, ""])
def test_a_request_without_a_hotkey_is_refused(hotkey: str | None) -> None:
    gatekeeper = synced(FakeChain(subnet()))
    assert gatekeeper.blacklist(hotkey) == (True, "request carries no hotkey")


def test_allowed_hotkeys_get_top_priority() -> None:
    gatekeeper = Gatekeeper(allowed_hotkeys=[PROBE], chain=None)
    assert gatekeeper.priority(PROBE) == ALLOWED_PRIORITY
    assert gatekeeper.priority(STRANGER) == 0.0
    assert gatekeeper.priority(None) == 0.0


# --- chain view --------------------------------------------------------------------------------------


def test_chain_allows_registered_and_refuses_unregistered() -> None:
    gatekeeper = synced(FakeChain(subnet()))
    for hotkey in (VALIDATOR, SMALL, MINER):
        refused, reason = gatekeeper.blacklist(hotkey)
        assert refused is False, reason
    refused, reason = gatekeeper.blacklist(STRANGER)
    assert refused is True
    assert "not registered" in reason


def test_until_the_first_sync_nobody_is_judged_and_the_chain_is_named_as_down() -> None:
    gatekeeper = Gatekeeper(allowed_hotkeys=[PROBE], chain=FakeChain(subnet()), endpoint="ws://chain:9944")
    assert gatekeeper.synced is False
    # Not a 403 "not registered" for a validator the miner simply could not look up yet: every request,
    # the probe's too, is answered 503 "dependency down: chain ... unreachable" (MinerService).
    assert gatekeeper.blacklist(VALIDATOR)[0] is False
    assert gatekeeper.unavailable() == "chain ws://chain:9944 unreachable (not synced yet)"
    assert gatekeeper.registered is None
    gatekeeper.sync()
    assert gatekeeper.unavailable() is None


def test_allowed_hotkeys_pass_on_a_chain_without_being_registered() -> None:
    gatekeeper = synced(FakeChain(subnet()), require_validator_permit=True, min_stake=1e9)
    assert gatekeeper.blacklist(PROBE) == (False, "allowed hotkey")
    assert gatekeeper.priority(PROBE) == ALLOWED_PRIORITY
    assert gatekeeper.priority(PROBE) > gatekeeper.priority(VALIDATOR)


def test_validator_permit_required() -> None:
    gatekeeper = synced(FakeChain(subnet()), require_validator_permit=True)
    assert gatekeeper.blacklist(VALIDATOR)[0] is False
    refused, reason = gatekeeper.blacklist(MINER)
    assert refused is True
    assert "validator permit" in reason and "uid 2" in reason


def test_validator_permit_not_required_by_default() -> None:
    assert synced(FakeChain(subnet())).blacklist(MINER)[0] is False


def test_min_stake() -> None:
    gatekeeper = synced(FakeChain(subnet()), min_stake=50.0)
    assert gatekeeper.blacklist(VALIDATOR)[0] is False
    assert gatekeeper.blacklist(MINER)[0] is False  # 100 >= 50
    refused, reason = gatekeeper.blacklist(SMALL)
    assert refused is True
    assert "stake 20" in reason and "min_stake 50" in reason


def test_min_stake_is_inclusive() -> None:
    assert synced(FakeChain(subnet()), min_stake=20.0).blacklist(SMALL)[0] is False


def test_priority_by_stake() -> None:
    gatekeeper = synced(FakeChain(subnet()))
    assert gatekeeper.priority(VALIDATOR) == 5000.0
    assert gatekeeper.priority(MINER) == 100.0
    assert gatekeeper.priority(SMALL) == 20.0
    assert gatekeeper.priority(STRANGER) == 0.0
    ranked = sorted([SMALL, STRANGER, MINER, VALIDATOR, PROBE], key=gatekeeper.priority, reverse=True)
    assert ranked == [PROBE, VALIDATOR, MINER, SMALL, STRANGER]


def test_a_failing_sync_keeps_the_last_view() -> None:
    chain = FakeChain(subnet())
    gatekeeper = synced(chain)
    chain.error = ConnectionError("websocket closed")
    assert gatekeeper.sync() is False
    assert gatekeeper.blacklist(VALIDATOR)[0] is False
    assert gatekeeper.priority(VALIDATOR) == 5000.0


def test_a_failing_first_sync_names_the_chain_and_its_error() -> None:
    chain = FakeChain(subnet())
    chain.error = ConnectionError("[Errno 111] Connection refused")
    gatekeeper = Gatekeeper(allowed_hotkeys=[PROBE], chain=chain, endpoint="ws://127.0.0.1:1")
    assert gatekeeper.sync() is False
    assert gatekeeper.synced is False
    assert gatekeeper.unavailable() == (
        "chain ws://127.0.0.1:1 unreachable: ConnectionError: [Errno 111] Connection refused"
    )


def test_own_registration_is_read_from_each_sync() -> None:
    chain = FakeChain(subnet())
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=chain, own_hotkey=MINER)
    assert gatekeeper.registered is None  # not known before a sync
    gatekeeper.sync()
    assert gatekeeper.registered is True and gatekeeper.seen_registered
    del chain.view[MINER]
    gatekeeper.sync()
    assert gatekeeper.registered is False
    assert gatekeeper.seen_registered  # so it is reported as deregistered, not as never registered


def test_a_later_sync_replaces_the_view() -> None:
    chain = FakeChain(subnet())
    gatekeeper = synced(chain)
    chain.view = {STRANGER: Neuron(uid=2, stake=1.0, validator_permit=False)}  # uid 2 re-registered
    assert gatekeeper.sync() is True
    assert gatekeeper.blacklist(STRANGER)[0] is False
    assert gatekeeper.blacklist(MINER)[0] is True
    assert gatekeeper.priority(VALIDATOR) == 0.0


# --- SubtensorChain on bittensor's MockSubtensor -----------------------------------------------------

NETUID = 7


def hotkey(uri: str) -> str:
    return str(Keypair.create_from_uri(uri).ss58_address)


@pytest.fixture
def mock_subtensor() -> Iterator[MockSubtensor]:
    # MockSubtensor keeps its chain in one module-global dict: start clean, leave clean.
    MockSubtensor.reset()
    subtensor = MockSubtensor()
    subtensor.create_subnet(NETUID)
    yield subtensor
    MockSubtensor.reset()


def set_validator_permit(subtensor: MockSubtensor, uid: int, permit: bool) -> None:
    permits = subtensor.chain_state["SubtensorModule"]["ValidatorPermit"][NETUID][uid]
    permits[subtensor.block_number] = permit


def test_subtensor_chain_reads_registered_neurons(mock_subtensor: MockSubtensor) -> None:
    coldkey = hotkey("//Owner")
    alice, bob = hotkey("//Alice"), hotkey("//Bob")
    uid_alice = mock_subtensor.force_register_neuron(NETUID, alice, coldkey, stake=1500.0)
    uid_bob = mock_subtensor.force_register_neuron(NETUID, bob, coldkey, stake=3.5)

    neurons = SubtensorChain(lambda: mock_subtensor, NETUID, "mock").neurons()

    assert neurons == {
        alice: Neuron(uid=uid_alice, stake=1500.0, validator_permit=False),
        bob: Neuron(uid=uid_bob, stake=3.5, validator_permit=False),
    }


def test_gatekeeper_on_the_mock_chain(mock_subtensor: MockSubtensor) -> None:
    coldkey = hotkey("//Owner")
    alice, bob, charlie = hotkey("//Alice"), hotkey("//Bob"), hotkey("//Charlie")
    probe, stranger = hotkey("//Probe"), hotkey("//Stranger")
    mock_subtensor.force_register_neuron(NETUID, alice, coldkey, stake=1500.0)
    mock_subtensor.force_register_neuron(NETUID, bob, coldkey, stake=3.5)
    mock_subtensor.force_register_neuron(NETUID, charlie, coldkey, stake=40.0)
    gatekeeper = Gatekeeper(
        allowed_hotkeys=[probe], chain=SubtensorChain(lambda: mock_subtensor, NETUID, "mock")
    )

    assert gatekeeper.sync() is True

    for registered in (alice, bob, charlie):
        assert gatekeeper.blacklist(registered)[0] is False
    refused, reason = gatekeeper.blacklist(stranger)
    assert refused is True and "not registered" in reason
    assert gatekeeper.blacklist(probe)[0] is False
    ranked = sorted([bob, stranger, charlie, probe, alice], key=gatekeeper.priority, reverse=True)
    assert ranked == [probe, alice, charlie, bob, stranger]


def test_permit_and_stake_rules_on_the_mock_chain(mock_subtensor: MockSubtensor) -> None:
    coldkey = hotkey("//Owner")
    alice, bob, charlie = hotkey("//Alice"), hotkey("//Bob"), hotkey("//Charlie")
    uid_alice = mock_subtensor.force_register_neuron(NETUID, alice, coldkey, stake=1500.0)
    uid_bob = mock_subtensor.force_register_neuron(NETUID, bob, coldkey, stake=3.5)
    mock_subtensor.force_register_neuron(NETUID, charlie, coldkey, stake=40.0)
    set_validator_permit(mock_subtensor, uid_alice, True)
    set_validator_permit(mock_subtensor, uid_bob, True)
    gatekeeper = Gatekeeper(
        allowed_hotkeys=[],
        chain=SubtensorChain(lambda: mock_subtensor, NETUID, "mock"),
        require_validator_permit=True,
        min_stake=10.0,
    )

    assert gatekeeper.sync() is True

    assert gatekeeper.blacklist(alice)[0] is False
    refused, reason = gatekeeper.blacklist(bob)  # a permit, but too little stake
    assert refused is True and "min_stake" in reason
    refused, reason = gatekeeper.blacklist(charlie)  # enough stake, but no permit
    assert refused is True and "validator permit" in reason


def test_a_neuron_registered_later_is_seen_after_the_next_sync(mock_subtensor: MockSubtensor) -> None:
    coldkey = hotkey("//Owner")
    alice, dave = hotkey("//Alice"), hotkey("//Dave")
    mock_subtensor.force_register_neuron(NETUID, alice, coldkey, stake=1.0)
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=SubtensorChain(lambda: mock_subtensor, NETUID, "mock"))
    gatekeeper.sync()
    assert gatekeeper.blacklist(dave)[0] is True

    mock_subtensor.force_register_neuron(NETUID, dave, coldkey, stake=2.0)
    assert gatekeeper.blacklist(dave)[0] is True  # never per request: only a sync updates the view
    gatekeeper.sync()
    assert gatekeeper.blacklist(dave)[0] is False


def test_a_missing_subnet_fails_the_sync_and_keeps_the_view(mock_subtensor: MockSubtensor) -> None:
    coldkey = hotkey("//Owner")
    alice = hotkey("//Alice")
    mock_subtensor.force_register_neuron(NETUID, alice, coldkey, stake=1.0)
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=SubtensorChain(lambda: mock_subtensor, NETUID, "mock"))
    gatekeeper.sync()
    gatekeeper.chain = SubtensorChain(lambda: mock_subtensor, NETUID + 1, "mock")  # "Subnet does not exist"
    assert gatekeeper.sync() is False
    assert gatekeeper.blacklist(alice)[0] is False


# --- SyncLoop ----------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_sync_loop_resyncs_on_its_interval() -> None:
    chain = FakeChain(subnet())
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=chain)
    loop = SyncLoop(gatekeeper, interval=0.01)
    loop.start()
    try:
        assert wait_until(lambda: chain.calls >= 3), "the loop did not re-sync"
        assert gatekeeper.blacklist(VALIDATOR)[0] is False
    finally:
        loop.stop()
    assert wait_until(lambda: not loop._thread.is_alive(), timeout=2.0)
    calls = chain.calls
    time.sleep(0.05)
    assert chain.calls == calls, "the loop went on syncing after stop()"


def test_sync_loop_waits_one_interval_before_syncing() -> None:
    chain = FakeChain(subnet())
    loop = SyncLoop(Gatekeeper(allowed_hotkeys=[], chain=chain), interval=3600.0)
    loop.start()
    time.sleep(0.05)
    loop.stop()
    loop._thread.join(timeout=2.0)
    assert chain.calls == 0  # main() syncs once at start-up; the loop only re-syncs


def test_sync_loop_stops_at_once_even_with_a_long_interval() -> None:
    loop = SyncLoop(Gatekeeper(allowed_hotkeys=[], chain=FakeChain()), interval=3600.0)
    loop.start()
    assert loop._thread.is_alive()
    assert loop._thread.daemon  # never keeps the process alive
    loop.stop()
    loop._thread.join(timeout=2.0)
    assert not loop._thread.is_alive(), "stop() must wake the loop, not wait out the interval"


def test_sync_loop_retries_a_failed_sync_after_1_s_doubling_to_30_s_never_the_interval() -> None:
    loop = SyncLoop(Gatekeeper(allowed_hotkeys=[], chain=FakeChain()), interval=600.0)
    assert [loop.next_wait(n) for n in range(8)] == [600.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_first_sync_that_fails_then_works_2_s_later_refuses_for_a_few_seconds_only() -> None:
    chain = FakeChain(subnet())
    chain.error = ConnectionError("refused")
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=chain)
    assert gatekeeper.sync() is False  # the miner's own first try, before the model loads
    loop = SyncLoop(gatekeeper, interval=600.0)
    started = time.monotonic()
    loop.start()
    try:
        time.sleep(2.0)
        chain.error = None  # the chain answers again 2 s later
        assert wait_until(lambda: gatekeeper.synced, timeout=30.0)
        took = time.monotonic() - started
    finally:
        loop.stop()
    # Retries at 1, 2 (then 4) s: synced by ~3 s after the start, not after the 600 s interval.
    assert took < 60.0, took
    assert gatekeeper.unavailable() is None and gatekeeper.blacklist(VALIDATOR)[0] is False


def test_sync_loop_reports_a_deregistration_once_and_stops() -> None:
    chain = FakeChain(subnet())
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=chain, own_hotkey=MINER)
    gatekeeper.sync()
    reported: list[bool] = []
    loop = SyncLoop(gatekeeper, interval=0.01, on_deregistered=lambda: reported.append(True))
    loop.start()
    try:
        del chain.view[MINER]
        assert wait_until(lambda: bool(reported))
        assert wait_until(lambda: not loop._thread.is_alive(), timeout=2.0)
    finally:
        loop.stop()
    assert reported == [True]


def test_sync_loop_survives_a_failing_sync() -> None:
    chain = FakeChain(subnet())
    chain.error = ConnectionError("down")
    gatekeeper = Gatekeeper(allowed_hotkeys=[], chain=chain)
    loop = SyncLoop(gatekeeper, interval=0.01)
    loop.start()
    try:
        assert wait_until(lambda: chain.calls >= 2)
        chain.error = None
        assert wait_until(lambda: gatekeeper.synced)
        assert gatekeeper.blacklist(VALIDATOR)[0] is False
    finally:
        loop.stop()
        loop._thread.join(timeout=2.0)


def test_the_fields_read_are_the_ones_bittensor_10_5_returns() -> None:
    """What SubtensorChain reads of each neuron (hotkey, uid, stake, validator_permit, axon_info) is what
    bittensor 10.5's neurons_lite returns; its ``stake`` is a Balance made without a netuid (printed τ),
    though under dynamic TAO the chain fills it with the hotkey's alpha on the subnet (TotalHotkeyAlpha):
    min_stake is compared with that number (the setting's description says so)."""
    import dataclasses

    from bittensor.core.chain_data import NeuronInfoLite

    from services.miner.settings import MinerSettings

    fields = {f.name for f in dataclasses.fields(NeuronInfoLite)}
    assert {"hotkey", "uid", "stake", "validator_permit", "axon_info"} <= fields
    described = MinerSettings.model_fields["min_stake"].description or ""
    assert "alpha" in described and "not TAO" in described


def test_own_uid_and_registration_reach_the_metrics_on_the_mock_chain(mock_subtensor: MockSubtensor) -> None:
    from services.miner.metrics import MinerMetrics

    own = hotkey("//Miner")
    mock_subtensor.force_register_neuron(NETUID, hotkey("//Alice"), hotkey("//Owner"), stake=1.0)
    uid = mock_subtensor.force_register_neuron(NETUID, own, hotkey("//Owner"), stake=2.0)
    gatekeeper = Gatekeeper(
        allowed_hotkeys=[], chain=SubtensorChain(lambda: mock_subtensor, NETUID, "mock"), own_hotkey=own
    )
    metrics = MinerMetrics(process=False)
    metrics.watch_registration(lambda: gatekeeper.registered, lambda: gatekeeper.own_uid)
    get = metrics.registry.get_sample_value
    assert (get("minerfleet_miner_registered"), get("minerfleet_miner_uid")) == (-1, -1)  # not synced yet
    assert gatekeeper.sync() is True
    assert (get("minerfleet_miner_registered"), get("minerfleet_miner_uid")) == (1, uid)
    gatekeeper.chain = SubtensorChain(lambda: _without(mock_subtensor, own), NETUID, "mock")
    gatekeeper.sync()
    assert (get("minerfleet_miner_registered"), get("minerfleet_miner_uid")) == (0, -1)


def _without(subtensor: MockSubtensor, hotkey: str) -> object:
    """The same chain's neurons, but one hotkey deregistered."""

    class Deregistered:
        def neurons_lite(self, netuid: int) -> list[object]:
            return [n for n in subtensor.neurons(netuid=netuid) if n.hotkey != hotkey]

    return Deregistered()
