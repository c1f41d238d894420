"""What the canonical (low-S) signature rule costs, in one process (issue 13, class 8).

``python -m bench.low_s``: ES256 signing as Latchkey did before (joserfc), with the
low-S rewrite it does now, the rewrite alone, and ``verify_jwt`` (which now also
refuses a high S). Medians of 5 alternating runs of 3,000 tokens, calls per second
on one core.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from latchkey.wire.jws import canonical_token, verify_jwt

N = 3000
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
PUBLIC = ECKey.import_key(KEY.as_dict(private=False))
HEADER = {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
NOW = int(time.time())
CLAIMS: dict[str, Any] = {
    "iss": "https://latchkey.bench",
    "sub": "user",
    "aud": "latchkey",
    "iat": NOW,
    "exp": NOW + 3600,
    "jti": "",
    "roles": ["member"],
}


def _signed(i: int) -> str:
    return jwt.encode(HEADER, {**CLAIMS, "jti": str(i)}, KEY, algorithms=["ES256"])


def _rate(check: Callable[[int], Any]) -> float:
    started = time.perf_counter()
    for i in range(N):
        check(i)
    return N / (time.perf_counter() - started)


def main() -> None:
    raw = [_signed(i) for i in range(N)]
    canonical = [canonical_token(token) for token in raw]
    checks: dict[str, Callable[[int], Any]] = {
        "sign (joserfc, before)": _signed,
        "sign + low-S rewrite (now)": lambda i: canonical_token(_signed(i)),
        "low-S rewrite alone": lambda i: canonical_token(raw[i]),
        "verify_jwt (with the low-S check)": lambda i: verify_jwt(
            canonical[i], lambda kid: PUBLIC, CLAIMS["iss"], CLAIMS["aud"]
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(5):
        for name, check in checks.items():
            runs[name].append(_rate(check))
    for name, rates in runs.items():
        median = statistics.median(rates)
        print(f"{name:36s} {median:9.0f}/s  {1e6 / median:7.1f} µs")


if __name__ == "__main__":
    main()
