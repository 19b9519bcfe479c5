"""Run by bittensor 11.3.0's own interpreter (scripts/bt11-venv.sh), never by the fleet's: its
``bittensor.http_auth`` against the miner's HTTP door, both ways.

    sign   WALLETS RECEIVER URL PROMPT   sign a streamed chat completion with http_auth.sign and send
                                          it; print {"status": ..., "text": ...} as JSON
    verify RECEIVER                       read {"headers", "body", "method", "path"} (JSON) on stdin,
                                          made by the fleet's own signer; print what verify() says
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import bittensor as bt


def sign(wallets: str, receiver: str, url: str, prompt: str) -> dict:
    wallet = bt.Wallet(name="fleet", hotkey="probe", path=wallets)
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "stream": True}).encode()
    headers = bt.http_auth.sign(
        wallet, method="POST", path="/v1/chat/completions", body=body, receiver_ss58=receiver
    )
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = ""
            for line in response.read().decode().splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:])["choices"]:
                        text += choice["delta"].get("content") or ""
            return {"status": response.status, "text": text}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "text": exc.read().decode()}


def verify(receiver: str) -> dict:
    signed = json.load(sys.stdin)
    try:
        caller = bt.http_auth.verify(
            signed["headers"],
            signed["body"].encode(),
            method=signed["method"],
            path=signed["path"],
            self_hotkey_ss58=receiver,
        )
    except bt.http_auth.AuthError as exc:
        return {"verified": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"verified": True, "hotkey": caller.hotkey_ss58}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps(sign(*args) if command == "sign" else verify(*args)))
