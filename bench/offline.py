"""Offline verification in one process: `latchkey.middleware` against its ceilings.

Run by bench/run.py as ``python -m bench.offline INPUT.json`` while Latchkey is served
(the middleware fetches the JWKS and the revocation feed from it once, then verifies
locally). Prints one JSON document:

* ``middleware_cold``: every call verifies a token it has never seen (distinct tokens,
  one pass, so no cache of any kind can help);
* ``middleware_warm``: the same token again and again;
* ``raw_es256``: the ceiling: split, base64-decode, ES256 signature check with
  ``cryptography`` (the key loaded once), JSON-decode the claims;
* ``joserfc_decode``: `joserfc.jwt.decode` with the key set.

Each is calls per second on one core (the GIL: scale with processes). The cold row
and its two ceilings go over the same tokens in alternating chunks of 250, so a
change in the load of a shared machine hits all three alike and their ratios hold.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import KeySet
from latchkey.middleware import LatchkeyMiddleware


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _rate(tokens: list[str], check: Callable[[str], Any], seconds: float) -> dict[str, float]:
    """Calls/s over ``tokens`` in order (at most one pass, at most ``seconds``)."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    for token in tokens:
        check(token)
        done += 1
        if done % 256 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - started
    return {"ops": done, "seconds": round(elapsed, 3), "ops_per_s": round(done / elapsed, 1)}


def _interleaved(
    tokens: list[str], checks: dict[str, Callable[[str], Any]], seconds: float, chunk: int = 250
) -> dict[str, dict[str, float]]:
    """Calls/s of each check over ``tokens`` in order, each token once per check, the
    checks taking turns chunk by chunk (at most one pass, at most ``seconds`` each)."""
    spent = dict.fromkeys(checks, 0.0)
    done = 0
    deadline = time.perf_counter() + seconds * len(checks)
    for start in range(0, len(tokens), chunk):
        part = tokens[start : start + chunk]
        for name, check in checks.items():
            began = time.perf_counter()
            for token in part:
                check(token)
            spent[name] += time.perf_counter() - began
        done += len(part)
        if time.perf_counter() > deadline:
            break
    return {
        name: {
            "ops": done,
            "seconds": round(spent[name], 3),
            "ops_per_s": round(done / spent[name], 1),
        }
        for name in checks
    }


def raw_verifier(jwks: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    keys = {}
    for jwk in jwks["keys"]:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_b64(jwk["x"]), "big"),
            int.from_bytes(_b64(jwk["y"]), "big"),
            ec.SECP256R1(),
        )
        keys[jwk["kid"]] = numbers.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())

    def verify(token: str) -> dict[str, Any]:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(_b64(header_b64))
        signature = _b64(signature_b64)
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            keys[header["kid"]].verify(der, f"{header_b64}.{payload_b64}".encode(), algorithm)
        except InvalidSignature as exc:
            raise ValueError("bad signature") from exc
        claims: dict[str, Any] = json.loads(_b64(payload_b64))
        return claims

    return verify


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())  # noqa: SIM115 - tiny file
    tokens: list[str] = spec["tokens"]
    seconds: float = spec["seconds"]
    url, issuer = spec["url"], spec["issuer"]

    def constant(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = LatchkeyMiddleware(
        constant,
        latchkey_url=url,
        service_type="objects",
        issuer=issuer,
        service_token=spec["service_token"],
    )
    middleware.verify(tokens[0])  # fetch the JWKS and the revocation feed once
    with urllib.request.urlopen(url + "/.well-known/jwks.json") as response:  # noqa: S310
        jwks = json.loads(response.read())
    key_set = KeySet.import_key_set(jwks)
    result: dict[str, Any] = _interleaved(
        tokens[1:],
        {
            "middleware_cold": middleware.verify,
            "raw_es256": raw_verifier(jwks),
            "joserfc_decode": lambda t: jwt.decode(t, key_set, algorithms=["ES256"]),
        },
        seconds,
    )
    warm = [tokens[0]] * max(len(tokens), 200_000)
    result["middleware_warm"] = _rate(warm, middleware.verify, seconds)
    # Sanity: the middleware accepted every token (a failure raises above).
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
