"""Signed HTTP: the two schemes validators sign plain HTTP requests with, both ways (sign and verify).

Written from the public specifications, with the sr25519 keys of ``bittensor-wallet`` (bittensor 11's own
``http_auth`` cannot be installed beside bittensor 10; the tests check each against the other):

- **Epistula v2** (SN1's validators since 2025). Headers ``Epistula-Version: 2``, ``-Timestamp`` (ms),
  ``-Uuid``, ``-Signed-By``, ``-Signed-For``, ``-Request-Signature``: ``0x`` + sr25519 over
  ``"{sha256(body).hex}.{uuid}.{timestamp}.{signed_for}"``. A request older than 8 s is stale.
- **btauth/1** (bittensor 11's ``bittensor.http_auth``). Headers ``X-Bittensor-Version: 1``, ``-Hotkey``,
  ``-Receiver``, ``-Nonce`` (ns), ``-Signature``, ``-Crypto`` (only for a non-sr25519 key). The signed
  bytes are eight lines: ``btauth/1``, the scheme, the method, the path with its query, sha256(body) in
  hex, the nonce, the sender and the receiver. 10 s back and 2 s ahead are fresh.

A request is checked in this order, and each failure is an :class:`AuthFailure` with its status and a
reason safe to send back: the headers' shape (400), the receiver (401: it must be this miner), freshness
(401), the signature over the body as received (401), then replay (401; the store is written only after
the signature holds, so forged traffic cannot fill it). Who may ask at all is the gatekeeper's question,
after this one (docs/ARCHITECTURE.md, "Doors").
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid as uuids
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bittensor_wallet import Keypair

Scheme = Literal["epistula", "btauth"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)

EPISTULA_VERSION = "2"
EPISTULA_MAX_AGE = 8.0  # seconds, as SN1's miners check it
BTAUTH = "btauth/1"
BTAUTH_VERSION = "1"
BTAUTH_MAX_AGE = 10.0  # bittensor 11's defaults
ALLOWED_SKEW = 2.0  # seconds a request may be dated ahead of this clock
REPLAY_CAPACITY = 200_000  # signatures remembered at once; past it requests are refused (busy)


class AuthFailure(Exception):
    """A request that does not authenticate: its HTTP status and a reason safe to send back."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed a request that verified."""

    hotkey: str
    scheme: Scheme


def scheme_of(headers: Mapping[str, str]) -> Scheme | None:
    """Which scheme a request is signed with (headers lower-cased), None for an unsigned one."""
    if "epistula-version" in headers or "epistula-request-signature" in headers:
        return "epistula"
    if "x-bittensor-version" in headers or "x-bittensor-signature" in headers:
        return "btauth"
    return None


class ReplayStore:
    """Signatures already accepted, each kept until it could no longer be fresh. Thread-safe, bounded."""

    def __init__(self, capacity: int = REPLAY_CAPACITY, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self._seen: set[tuple[str, str, str]] = set()
        self._expiry: deque[tuple[float, tuple[str, str, str]]] = deque()
        self._lock = threading.Lock()

    def first_time(self, key: tuple[str, str, str], keep: float) -> bool:
        """Record ``key`` for ``keep`` seconds; False if it was already there (a replay)."""
        now = self.clock()
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                self._seen.discard(self._expiry.popleft()[1])
            if key in self._seen:
                return False
            if len(self._seen) >= self.capacity:
                raise AuthFailure("busy: too many signed requests in the freshness window", status=503)
            self._seen.add(key)
            # Expiries arrive nearly in order (keep is a constant per scheme); a late one only lives longer.
            self._expiry.append((now + keep, key))
            return True

    def __len__(self) -> int:
        return len(self._seen)


class Verifier:
    """Verifies both schemes for one receiving hotkey (the miner's own), with one replay store."""

    def __init__(
        self,
        own_hotkey: str,
        schemes: tuple[Scheme, ...] = SCHEMES,
        *,
        replays: ReplayStore | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.own_hotkey = own_hotkey
        self.schemes = schemes
        self.replays = replays or ReplayStore()
        self.wall_clock = wall_clock

    def verify(self, headers: Mapping[str, str], body: bytes, method: str, target: str) -> Signer:
        """The signer of a request (``headers`` lower-cased; ``target``: the path and ``?query`` as sent)."""
        scheme = scheme_of(headers)
        if scheme is None:
            raise AuthFailure(
                f"unsigned request: sign it with {' or '.join(_named(s) for s in self.schemes)}"
            )
        if scheme not in self.schemes:
            raise AuthFailure(
                f"{_named(scheme)} is not accepted by this miner: sign with "
                f"{' or '.join(_named(s) for s in self.schemes)}"
            )
        if scheme == "epistula":
            return self._epistula(headers, body)
        return self._btauth(headers, body, method, target)

    def _epistula(self, headers: Mapping[str, str], body: bytes) -> Signer:
        version = headers.get("epistula-version")
        if version != EPISTULA_VERSION:
            raise AuthFailure(f"Epistula-Version must be {EPISTULA_VERSION!r}", status=400)
        signed_by = _required(headers, "epistula-signed-by", "Epistula-Signed-By")
        uuid = _required(headers, "epistula-uuid", "Epistula-Uuid")
        raw_timestamp = _required(headers, "epistula-timestamp", "Epistula-Timestamp")
        signature = _hex(_required(headers, "epistula-request-signature", "Epistula-Request-Signature"))
        try:
            timestamp = int(raw_timestamp)
        except ValueError:
            raise AuthFailure("Epistula-Timestamp is not whole milliseconds", status=400) from None
        signed_for = headers.get("epistula-signed-for", "")
        if signed_for != self.own_hotkey:
            raise AuthFailure(_wrong_receiver("Epistula-Signed-For", signed_for, self.own_hotkey))
        _fresh(timestamp / 1000.0, self.wall_clock(), EPISTULA_MAX_AGE)
        message = f"{hashlib.sha256(body).hexdigest()}.{uuid}.{timestamp}.{signed_for}"
        _check_signature(signed_by, message.encode(), signature)
        self._once("epistula", signed_by, uuid, EPISTULA_MAX_AGE)
        return Signer(signed_by, "epistula")

    def _btauth(self, headers: Mapping[str, str], body: bytes, method: str, target: str) -> Signer:
        if headers.get("x-bittensor-version") != BTAUTH_VERSION:
            raise AuthFailure(f"X-Bittensor-Version must be {BTAUTH_VERSION!r}", status=400)
        sender = _required(headers, "x-bittensor-hotkey", "X-Bittensor-Hotkey")
        raw_nonce = _required(headers, "x-bittensor-nonce", "X-Bittensor-Nonce")
        signature = _hex(_required(headers, "x-bittensor-signature", "X-Bittensor-Signature"))
        crypto = headers.get("x-bittensor-crypto", "sr25519")
        if crypto != "sr25519":
            raise AuthFailure(f"X-Bittensor-Crypto {crypto!r} is not accepted: sign with sr25519", status=400)
        try:
            nonce = int(raw_nonce)
        except ValueError:
            raise AuthFailure("X-Bittensor-Nonce is not a decimal integer", status=400) from None
        receiver = headers.get("x-bittensor-receiver")
        if receiver != self.own_hotkey:
            raise AuthFailure(_wrong_receiver("X-Bittensor-Receiver", receiver or "", self.own_hotkey))
        _fresh(nonce / 1e9, self.wall_clock(), BTAUTH_MAX_AGE)
        payload = btauth_payload(method, target, body, nonce, sender, receiver)
        _check_signature(sender, payload, signature)
        self._once("btauth", sender, str(nonce), BTAUTH_MAX_AGE)
        return Signer(sender, "btauth")

    def _once(self, scheme: str, hotkey: str, nonce: str, max_age: float) -> None:
        if not self.replays.first_time((scheme, hotkey, nonce), max_age + ALLOWED_SKEW + 1.0):
            raise AuthFailure("replayed request: this signature was already used")


def btauth_payload(
    method: str, target: str, body: bytes, nonce: int, sender: str, receiver: str | None
) -> bytes:
    """The eight lines btauth/1 signs."""
    lines = (
        BTAUTH,
        "sr25519",
        method.upper(),
        target,
        hashlib.sha256(body).hexdigest(),
        str(nonce),
        sender,
        receiver or "-",
    )
    return "\n".join(lines).encode()


# --- signing (the fleet's probe and capacity; tests) -----------------------------------------------


def sign_epistula(
    keypair: Any, body: bytes, receiver: str, *, timeout: float | None = None, now: float | None = None
) -> dict[str, str]:
    """Epistula v2 headers for ``body``, signed by ``keypair`` (a bittensor-wallet ``Keypair``)."""
    timestamp = round((time.time() if now is None else now) * 1000)
    uuid = str(uuids.uuid4())
    message = f"{hashlib.sha256(body).hexdigest()}.{uuid}.{timestamp}.{receiver}"
    headers = {
        "Epistula-Version": EPISTULA_VERSION,
        "Epistula-Timestamp": str(timestamp),
        "Epistula-Uuid": uuid,
        "Epistula-Signed-By": keypair.ss58_address,
        "Epistula-Signed-For": receiver,
        "Epistula-Request-Signature": "0x" + bytes(keypair.sign(message.encode())).hex(),
    }
    if timeout is not None:
        headers["X-Client-Timeout"] = f"{timeout:g}"
    return headers


def sign_btauth(
    keypair: Any, method: str, target: str, body: bytes, receiver: str, *, nonce: int | None = None
) -> dict[str, str]:
    """btauth/1 headers for a request, signed by ``keypair`` (as ``bittensor.http_auth.sign`` makes)."""
    nonce = time.time_ns() if nonce is None else nonce
    payload = btauth_payload(method, target, body, nonce, keypair.ss58_address, receiver)
    return {
        "X-Bittensor-Version": BTAUTH_VERSION,
        "X-Bittensor-Hotkey": keypair.ss58_address,
        "X-Bittensor-Nonce": str(nonce),
        "X-Bittensor-Signature": "0x" + bytes(keypair.sign(payload)).hex(),
        "X-Bittensor-Receiver": receiver,
    }


def sign(
    scheme: Scheme, keypair: Any, method: str, target: str, body: bytes, receiver: str, timeout: float
) -> dict[str, str]:
    """The headers of one scheme, with the client's deadline (``X-Client-Timeout``) beside them."""
    if scheme == "epistula":
        return sign_epistula(keypair, body, receiver, timeout=timeout)
    return {**sign_btauth(keypair, method, target, body, receiver), "X-Client-Timeout": f"{timeout:g}"}


# --- the checks -------------------------------------------------------------------------------------


def _named(scheme: str) -> str:
    return "Epistula v2" if scheme == "epistula" else BTAUTH


def _required(headers: Mapping[str, str], key: str, shown: str) -> str:
    value = headers.get(key)
    if not value:
        raise AuthFailure(f"missing {shown}", status=400)
    return value


def _hex(value: str) -> bytes:
    try:
        signature = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise AuthFailure("the signature is not hex", status=400) from None
    if len(signature) != 64:
        raise AuthFailure("the signature is not 64 bytes (sr25519)", status=400)
    return signature


def _wrong_receiver(header: str, got: str, own: str) -> str:
    if not got:
        return f"missing {header}: sign the request for this miner's hotkey {own}"
    return f"{header} is {got}, not this miner's hotkey {own}"


def _fresh(signed_at: float, now: float, max_age: float) -> None:
    if now - signed_at > max_age:
        raise AuthFailure(f"stale request: signed {now - signed_at:.1f}s ago, at most {max_age:g}s is fresh")
    if signed_at - now > ALLOWED_SKEW:
        raise AuthFailure(f"request dated {signed_at - now:.1f}s ahead of this miner's clock")


def _check_signature(hotkey: str, message: bytes, signature: bytes) -> None:
    try:
        valid = Keypair(ss58_address=hotkey).verify(message, signature)
    except ValueError:
        raise AuthFailure("the signer is not a valid ss58 hotkey address", status=400) from None
    except Exception:  # bittensor-wallet's own errors on odd input
        valid = False
    if not valid:
        raise AuthFailure("bad signature: it does not verify for the signer over this request and body")
