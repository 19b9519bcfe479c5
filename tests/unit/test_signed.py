"""Epistula v2 and btauth/1, sign and verify, at the seams: clocks, the replay store, the header shapes."""

from __future__ import annotations

import pytest
from bittensor_wallet import Keypair

from services.miner.signed import (
    AuthFailure,
    ReplayStore,
    Verifier,
    btauth_payload,
    sign_btauth,
    sign_epistula,
)

CALLER = Keypair.create_from_uri("//Alice")
MINER = Keypair.create_from_uri("//Bob").ss58_address
BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'
NOW = 1_800_000_000.0


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _verifier(**kw: object) -> Verifier:
    return Verifier(MINER, wall_clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def test_both_schemes_verify_their_own_signatures() -> None:
    verifier = _verifier()
    epistula = sign_epistula(CALLER, BODY, MINER, now=NOW)
    btauth = sign_btauth(CALLER, "POST", "/v1/chat/completions?a=1", BODY, MINER, nonce=int(NOW * 1e9))
    assert verifier.verify(_lower(epistula), BODY, "POST", "/x").scheme == "epistula"
    signer = verifier.verify(_lower(btauth), BODY, "POST", "/v1/chat/completions?a=1")
    assert (signer.hotkey, signer.scheme) == (CALLER.ss58_address, "btauth")


def test_btauth_signs_the_query_and_the_method() -> None:
    headers = _lower(
        sign_btauth(CALLER, "POST", "/v1/chat/completions?a=1", BODY, MINER, nonce=int(NOW * 1e9))
    )
    with pytest.raises(AuthFailure, match="bad signature"):
        _verifier().verify(headers, BODY, "POST", "/v1/chat/completions?a=2")


def test_btauth_payload_is_eight_lines() -> None:
    payload = btauth_payload("post", "/p?q", b"", 5, "S", None).decode().split("\n")
    assert payload == [
        "btauth/1", "sr25519", "POST", "/p?q",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "5", "S", "-",
    ]  # fmt: skip


@pytest.mark.parametrize(("age", "ok"), [(7.9, True), (8.1, False), (-1.9, True), (-2.1, False)])
def test_epistula_freshness_window(age: float, ok: bool) -> None:
    headers = _lower(sign_epistula(CALLER, BODY, MINER, now=NOW - age))
    if ok:
        _verifier().verify(headers, BODY, "POST", "/x")
    else:
        with pytest.raises(AuthFailure) as failure:
            _verifier().verify(headers, BODY, "POST", "/x")
        assert failure.value.status == 401


def test_only_the_configured_schemes_are_taken() -> None:
    headers = _lower(sign_epistula(CALLER, BODY, MINER, now=NOW))
    with pytest.raises(AuthFailure, match="Epistula v2 is not accepted"):
        _verifier(schemes=("btauth",)).verify(headers, BODY, "POST", "/x")


def test_a_replay_is_refused_and_forgotten_after_the_window() -> None:
    clock = [0.0]
    store = ReplayStore(clock=lambda: clock[0])
    assert store.first_time(("epistula", "k", "u"), keep=11.0)
    assert not store.first_time(("epistula", "k", "u"), keep=11.0)
    clock[0] = 11.5
    assert store.first_time(("epistula", "k", "other"), keep=11.0)
    assert len(store) == 1  # the first one expired


def test_a_full_replay_store_refuses_busy_instead_of_forgetting() -> None:
    store = ReplayStore(capacity=2, clock=lambda: 0.0)
    store.first_time(("b", "k", "1"), 10)
    store.first_time(("b", "k", "2"), 10)
    with pytest.raises(AuthFailure) as failure:
        store.first_time(("b", "k", "3"), 10)
    assert failure.value.status == 503


def test_a_forged_signature_does_not_enter_the_replay_store() -> None:
    verifier = _verifier()
    headers = _lower(sign_epistula(CALLER, BODY, MINER, now=NOW))
    with pytest.raises(AuthFailure, match="bad signature"):
        verifier.verify(headers, BODY + b" ", "POST", "/x")
    assert verifier.verify(headers, BODY, "POST", "/x").hotkey == CALLER.ss58_address


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"epistula-request-signature": "0xzz"}, 400),
        ({"epistula-request-signature": "0x1234"}, 400),
        ({"epistula-signed-by": "not-an-address"}, 400),
        ({"epistula-version": "1"}, 400),
        ({"epistula-uuid": ""}, 400),
        ({"epistula-signed-for": ""}, 401),
    ],
)
def test_malformed_headers_are_400_and_a_missing_receiver_401(change: dict[str, str], status: int) -> None:
    headers = {**_lower(sign_epistula(CALLER, BODY, MINER, now=NOW)), **change}
    with pytest.raises(AuthFailure) as failure:
        _verifier().verify(headers, BODY, "POST", "/x")
    assert failure.value.status == status
