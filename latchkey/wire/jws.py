"""Latchkey's compact JWS: ES256 signatures made canonical, and their offline check.

Shared by the service (``latchkey.tokens.service``: issuance and validation), the
``latchkey token verify`` command and ``latchkey.middleware``, so it imports
neither Flask nor SQLAlchemy.

ECDSA signatures are malleable: if ``(r, s)`` is a valid signature, so is
``(r, n - s)`` (``n`` the order of P-256), a different token string carrying the
same claims. Latchkey signs with **low S** (``s <= n/2``, the form Bitcoin and
Ethereum also require) and refuses the high-S twin anywhere it checks a token, so
one set of claims has exactly one valid encoding: a token string can be compared,
hashed, cached or deny-listed as the token (docs/decisions.md).
"""

from __future__ import annotations

import binascii
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet

from latchkey.errors import LatchkeyError

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"  # RFC 9068 section 2.1
MAX_TOKEN_LENGTH = 8192
# The order of P-256's base point (FIPS 186-4, D.1.2.3); a low-S signature has s <= n/2.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2


class TokenInvalid(LatchkeyError):
    """Bad signature, expired, revoked, malformed: callers never learn which."""

    status = 401
    code = "invalid_token"
    title = "The token is not valid"


# -- canonical signatures -------------------------------------------------------------


def low_s(signature: bytes) -> bytes:
    """An ES256 signature (``r || s``, 64 bytes) in its low-S form: ``s`` replaced by
    ``n - s`` when above ``n/2``; the same signature otherwise."""
    if len(signature) != 64:
        raise ValueError("an ES256 signature is 64 bytes")
    s = int.from_bytes(signature[32:], "big")
    if s <= P256_HALF_ORDER:
        return signature
    return signature[:32] + (P256_ORDER - s).to_bytes(32, "big")


def is_canonical(signature: bytes) -> bool:
    """``r`` and ``s`` in range, and ``s`` low: the one encoding Latchkey accepts."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    return 0 < r < P256_ORDER and 0 < s <= P256_HALF_ORDER


def canonical_token(token: str) -> str:
    """A compact ES256 JWS (as joserfc writes it) with its signature in low-S form."""
    signing_input, _, signature_b64 = token.rpartition(".")
    signature = _b64url_decode(signature_b64)
    canonical = low_s(signature)
    if canonical is signature:
        return token
    return signing_input + "." + _b64url_encode(canonical)


def _b64url_encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode().translate(_STANDARD_TO_URLSAFE)


_STANDARD_TO_URLSAFE = str.maketrans("+/", "-_", "=")


# -- the offline check ---------------------------------------------------------------


def verify_jwt(
    token: str,
    keys_for_kid: Callable[[str], Key | KeySet],
    issuer: str,
    audience: str,
    now: float | None = None,
) -> dict[str, Any]:
    """Offline check of a Latchkey token: canonical (low-S) ES256 signature by a known
    key, typ, claims.

    Shared by the service and by anything holding only the JWKS (``latchkey
    token verify --jwks-url``). Revocation is not checked here. ``now`` is the
    wall-clock time (``time.time()`` by default).

    joserfc imports and vets the keys (and signs); the token is taken apart here
    and its signature checked with ``cryptography`` directly (docs/decisions.md):
    joserfc's general JWS path (header registry checks, key guessing, lax-to-strict
    base64 layers) held the middleware's cold verification to ~76 % of a bare
    ES256 check; this path, as strict, reaches ~94 % (bench/offline.py).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid()
    # Three strict base64url segments, the last one exactly 64 bytes (r || s).
    compact = _COMPACT_ES256.fullmatch(token)
    if compact is None:
        raise TokenInvalid()
    header_b64, payload_b64, signature_b64 = compact.groups()
    try:
        kid = _ACCEPTED_HEADERS.get(header_b64) or _header_kid(header_b64)
        public_key = _es256_public_key(keys_for_kid(kid), kid)
        signature = _b64url_decode(signature_b64)
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        # Low S only: the high-S twin (r, n - s) of a valid signature is refused.
        if not (0 < r < P256_ORDER and 0 < s <= P256_HALF_ORDER):
            raise ValueError("not a canonical (low-S) ES256 signature")
        public_key.verify(
            encode_dss_signature(r, s), token[: compact.end(2)].encode(), _ECDSA_SHA256
        )
        claims = json.loads(_b64url_decode(payload_b64).decode())
    except (InvalidSignature, JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenInvalid() from exc
    if not isinstance(claims, dict) or not _claims_valid(claims, issuer, audience, now):
        raise TokenInvalid()
    _remember(_ACCEPTED_HEADERS, header_b64, kid)  # signed by a key of ours: one of our headers
    return claims


# header.payload.signature, base64url without padding. The header is at most 512
# characters (joserfc's limit; it is decoded before the signature is checked). A
# signature of 64 bytes is 86 characters, the last one carrying 4 bits of it and 2
# zero bits (A, Q, g or w).
_COMPACT_ES256 = re.compile(r"([A-Za-z0-9_-]{1,512})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{85}[AQgw])")
# As joserfc's urlsafe_b64decode: a segment of 4n+3 or 4n+2 characters must leave the
# unused bits of its last character zero (one encoding per byte string, no malleability).
_LAST_CHARACTERS = {1: "AEIMQUYcgkosw048", 2: "AQgw"}  # by the padding it lacks
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# Header segments that came with a valid signature (``{alg, typ, kid}`` as Latchkey
# writes them, a few kids at a time) -> their kid: not decoded again.
_ACCEPTED_HEADERS: dict[str, str] = {}
# id(key) -> (key, its cryptography public key), for keys vetted by _es256_public_key;
# the key is held so that its id cannot be reused while the entry lives.
_PUBLIC_KEYS: dict[int, tuple[Key, ec.EllipticCurvePublicKey]] = {}
_MEMO_SIZE = 64


def _b64url_decode(segment: str) -> bytes:
    """A segment already matched by _COMPACT_ES256 (URL-safe alphabet, no padding)."""
    pad = -len(segment) % 4
    if pad == 3 or (pad and segment[-1] not in _LAST_CHARACTERS[pad]):
        raise ValueError("not canonical base64url")
    return binascii.a2b_base64(
        segment.encode().translate(_URLSAFE_TO_STANDARD) + b"=" * pad, strict_mode=True
    )


def _header_kid(segment: str) -> str:
    """The kid of a header that is exactly ``{alg: ES256, typ: at+jwt, kid}``: no other
    algorithm (``none``, HS256 keyed with our public key), no other parameter."""
    header = json.loads(_b64url_decode(segment).decode())
    if not isinstance(header, dict) or len(header) != 3:
        raise ValueError("unexpected header")
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise ValueError("unexpected header")
    if not isinstance(kid, str) or not kid:
        raise ValueError("unexpected header")
    return kid


def _es256_public_key(found: Key | KeySet, kid: str) -> ec.EllipticCurvePublicKey:
    """The key joserfc would verify an ES256 token of ``kid`` with, vetted as joserfc
    vets it (an EC P-256 key, ``use``, ``alg`` and ``key_ops`` allowing it), once per
    key object."""
    if isinstance(found, KeySet):
        found = found.get_by_kid(kid, {"alg": ALGORITHM, "use": "sig"})
    held = _PUBLIC_KEYS.get(id(found))
    if held is not None and held[0] is found:
        return held[1]
    if not isinstance(found, ECKey) or found.curve_name != "P-256":
        raise ValueError("not an ES256 key")
    found.check_use("sig")
    found.check_alg(ALGORITHM)
    public_key = found.get_op_key("verify")
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ES256 key")
    _remember(_PUBLIC_KEYS, id(found), (found, public_key))
    return public_key


def _remember(memo: dict[Any, Any], name: Any, value: Any) -> None:
    if name not in memo:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()  # a handful of keys in use at a time: nothing worth an LRU
        memo[name] = value


def _claims_valid(claims: dict[str, Any], issuer: str, audience: str, now: float | None) -> bool:
    """What ``JWTClaimsRegistry(iss=issuer, aud=audience, exp, iat, sub, jti all
    essential).validate(claims)`` decides, with its defaults (now = whole seconds,
    no leeway), without building a registry per token (tests/unit/
    test_token_verification.py holds the two side by side)."""
    # A missing or null essential claim fails its own check below.
    seconds = int(time.time() if now is None else now)
    get = claims.get
    iss, aud, sub, jti = get("iss"), get("aud"), get("sub"), get("jti")
    if not (isinstance(iss, str) and iss and iss == issuer):
        return False
    if not (isinstance(sub, str) and sub and isinstance(jti, str) and jti):
        return False
    if isinstance(aud, list):
        if not aud or not all(isinstance(a, str) for a in aud) or audience not in aud:
            return False
    elif not (isinstance(aud, str) and aud and aud == audience):
        return False
    exp, iat = get("exp"), get("iat")
    if not (_numeric_date(exp) and exp > seconds and _numeric_date(iat) and iat <= seconds):
        return False
    nbf = claims.get("nbf")
    return "nbf" not in claims or (_numeric_date(nbf) and nbf <= seconds)


def _numeric_date(value: object) -> TypeGuard[int | float]:
    # As joserfc: a JSON number, not a bool, not NaN or infinite.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
