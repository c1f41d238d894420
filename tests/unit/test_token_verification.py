"""``verify_jwt``, the offline check shared by Latchkey and ``latchkey.middleware``:
what it refuses, and its claim checks decided exactly as joserfc's
``JWTClaimsRegistry`` (which it no longer builds per token) decides them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from latchkey.tokens.service import TokenInvalid, verify_jwt
from latchkey.wire.jws import P256_ORDER, canonical_token

ISSUER = "https://latchkey.test"
AUDIENCE = "latchkey"
NOW = 1_800_000_000
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
PUBLIC = ECKey.import_key(KEY.as_dict(private=False))
OTHER = ECKey.generate_key("P-256", parameters={"kid": "k2"})
KEYS = KeySet([PUBLIC, ECKey.import_key(OTHER.as_dict(private=False))])
HEADER = {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "iat_ms": (NOW - 10) * 1000,
        "exp": NOW + 3600,
        "jti": "jti-1",
        "roles": ["member"],
        "project": {"id": "p1"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}  # ... deletes a claim


def sign(payload: dict[str, Any], header: dict[str, Any] | None = None, key: ECKey = KEY) -> str:
    # Low S, as Latchkey signs (a high-S twin is refused: tests/attacks/test_signatures.py).
    return canonical_token(jwt.encode(header or HEADER, payload, key, algorithms=["ES256"]))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def verify(token: str, keys: Any = PUBLIC, now: float = NOW) -> dict[str, Any]:
    return verify_jwt(token, lambda kid: keys, ISSUER, AUDIENCE, now)


def test_a_valid_token_verifies_with_a_key_or_a_key_set() -> None:
    token = sign(claims())
    assert verify(token) == claims()
    assert verify(sign_raw(json.dumps(claims()).encode())) == claims()  # the helper below
    assert verify(token, KEYS) == claims()
    other = sign(claims(), {**HEADER, "kid": "k2"}, OTHER)
    assert verify(other, KEYS) == claims()


def hs256_keyed_with(secret: bytes, payload: dict[str, Any]) -> str:
    signing_input = unsigned({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}, payload)
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


def refused_tokens() -> dict[str, str]:
    good = sign(claims())
    header, payload, signature = good.split(".")
    public_pem = PUBLIC.as_pem()
    public_jwk = json.dumps(PUBLIC.as_dict()).encode()
    return {
        "alg none": unsigned({"alg": "none", "typ": "at+jwt", "kid": "k1"}, claims()) + ".",
        "HS256, the public key's PEM as secret": hs256_keyed_with(public_pem, claims()),
        "HS256, the public JWK as secret": hs256_keyed_with(public_jwk, claims()),
        "ES384 header": unsigned({**HEADER, "alg": "ES384"}, claims()) + "." + signature,
        "another key under our kid": sign(claims(), key=ECKey.generate_key("P-256")),
        "wrong typ": sign(claims(), {**HEADER, "typ": "JWT"}),
        "no kid": sign(claims(), {"alg": "ES256", "typ": "at+jwt"}),
        "kid not a string": sign_raw(json.dumps(claims()).encode(), {**HEADER, "kid": 7}),
        "unknown header parameter": sign_raw(
            json.dumps(claims()).encode(), {**HEADER, "x-extra": 1}
        ),
        "tampered payload": f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "another token's signature": f"{sign(claims(jti='j2')).rsplit('.', 1)[0]}.{signature}",
        "header not an object": f"{b64(b'[1]')}.{payload}.{signature}",
        "payload not an object": sign_raw(b"[1]"),
        "payload not JSON": sign_raw(b"not json"),
        "two segments": f"{header}.{payload}",
        "garbage": "not-a-token",
        "empty": "",
        "too long": sign(claims(pad="x" * 9000)),
    }


def sign_raw(payload: bytes, header: dict[str, Any] | None = None) -> str:
    """ES256 over anything (joserfc refuses to sign some of these headers)."""
    signing_input = f"{b64(json.dumps(header or HEADER).encode())}.{b64(payload)}"
    der = KEY.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    r, s = decode_dss_signature(der)
    s = min(s, P256_ORDER - s)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize("name", sorted(refused_tokens()))
def test_refused(name: str) -> None:
    token = refused_tokens()[name]
    with pytest.raises(TokenInvalid):
        verify(token)
    with pytest.raises(TokenInvalid):
        verify(token, KEYS)


def test_an_unknown_kid_is_refused_by_the_key_lookup() -> None:
    def key_for_kid(kid: str) -> ECKey:
        raise TokenInvalid()

    with pytest.raises(TokenInvalid):
        verify_jwt(sign(claims()), key_for_kid, ISSUER, AUDIENCE, NOW)
    with pytest.raises(TokenInvalid):
        verify(sign(claims(), {**HEADER, "kid": "k9"}), KEYS)


CLAIM_CASES: dict[str, dict[str, Any]] = {
    "valid": {},
    "extra claims": {"anything": {"nested": [1, 2]}, "nbf": NOW - 5},
    **{f"{name} missing": {name: ...} for name in ("iss", "aud", "exp", "iat", "sub", "jti")},
    **{f"{name} null": {name: None} for name in ("iss", "aud", "exp", "iat", "sub", "jti")},
    "iss other": {"iss": "https://evil.example"},
    "iss empty": {"iss": ""},
    "iss number": {"iss": 5},
    "iss list": {"iss": [ISSUER]},
    "aud other": {"aud": "another-service"},
    "aud empty": {"aud": ""},
    "aud list with ours": {"aud": ["other", AUDIENCE]},
    "aud list without ours": {"aud": ["other"]},
    "aud empty list": {"aud": []},
    "aud list with a number": {"aud": [AUDIENCE, 5]},
    "aud number": {"aud": 5},
    "aud object": {"aud": {"latchkey": True}},
    "exp now": {"exp": NOW},
    "exp a second ago": {"exp": NOW - 1},
    "exp in a second": {"exp": NOW + 1},
    "exp fraction ahead": {"exp": NOW + 0.5},
    "exp fraction behind": {"exp": NOW - 0.5},
    "exp string": {"exp": str(NOW + 60)},
    "exp true": {"exp": True},
    "exp NaN": {"exp": float("nan")},
    "exp infinite": {"exp": float("inf")},
    "exp huge": {"exp": 10**400},
    "iat now": {"iat": NOW},
    "iat in the future": {"iat": NOW + 1},
    "iat fraction ahead": {"iat": NOW + 0.5},
    "iat string": {"iat": "yesterday"},
    "iat false": {"iat": False},
    "iat zero": {"iat": 0},
    "nbf now": {"nbf": NOW},
    "nbf ahead": {"nbf": NOW + 1},
    "nbf null": {"nbf": None},
    "nbf string": {"nbf": "later"},
    "sub empty": {"sub": ""},
    "sub number": {"sub": 5},
    "jti empty": {"jti": ""},
    "jti list": {"jti": ["a"]},
}


def registry_accepts(payload: dict[str, Any], now: int) -> bool:
    """What verify_jwt did before: a registry built per token."""
    registry = JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
    )
    try:
        registry.validate(payload)
    except (JoseError, ValueError, TypeError, KeyError):
        return False
    return True


@pytest.mark.parametrize("name", sorted(CLAIM_CASES))
@pytest.mark.parametrize("now", [NOW, NOW + 0.7])
def test_claims_are_decided_as_joserfc_decides_them(name: str, now: float) -> None:
    payload = claims(**CLAIM_CASES[name])
    token = sign(payload)
    expected = registry_accepts(json.loads(json.dumps(payload)), int(now))
    try:
        verify(token, now=now)
        accepted = True
    except TokenInvalid:
        accepted = False
    assert accepted == expected
    assert expected == (name in ACCEPTED), "the case table is out of date"


ACCEPTED = {
    "valid",
    "extra claims",
    "aud list with ours",
    "exp in a second",
    "exp fraction ahead",
    "exp huge",
    "iat now",
    "iat zero",
    "nbf now",
}


# -- the compact form, taken apart by verify_jwt itself ------------------------------------
# joserfc vets the keys; verify_jwt splits the token, decodes it and checks the ES256
# signature with ``cryptography``. Each token below is refused, most of them carrying a
# valid signature over exactly the segments they show (so only the parsing refuses them).


def sign_segments(header: str, payload: str) -> str:
    """A valid ES256 signature over ``header.payload`` as given, however they are encoded."""
    der = KEY.private_key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    r, s = decode_dss_signature(der)
    s = min(s, P256_ORDER - s)
    return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def non_canonical(encoded: str) -> str:
    """The same bytes, with unused bits set in the last character (a lax decoder agrees)."""
    assert len(encoded) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return encoded[:-1] + alphabet[alphabet.index(encoded[-1]) + 1]


def payload_of_length_mod_4(remainder: int) -> str:
    for pad in range(8):
        encoded = segment(claims(pad="x" * pad))
        if len(encoded) % 4 == remainder:
            return encoded
    raise AssertionError("unreachable")


def raw_signature(token: str) -> bytes:
    return base64.urlsafe_b64decode(token.split(".")[2] + "==")


def with_signature(token: str, signature: str) -> str:
    return token.rsplit(".", 1)[0] + "." + signature


def standard_alphabet_token() -> str:
    """A valid token with '-' or '_' in its signature, re-spelt with '+' and '/'."""
    for jti in range(100):
        token = sign(claims(jti=f"j{jti}"))
        signature = token.split(".")[2]
        if "-" in signature or "_" in signature:
            return with_signature(token, signature.replace("-", "+").replace("_", "/"))
    raise AssertionError("100 signatures without '-' or '_'")


def parsing_refusals() -> dict[str, str]:
    good = sign(claims())
    header, payload, signature = good.split(".")
    der = KEY.private_key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    odd, even = payload_of_length_mod_4(3), payload_of_length_mod_4(2)
    return {
        "padded header": sign_segments(header + "=" * (-len(header) % 4 or 4), payload),
        "padded payload": sign_segments(header, payload + "=" * (-len(payload) % 4 or 4)),
        "padded signature": good + "==",
        "standard alphabet (+ and /)": standard_alphabet_token(),
        "invalid character in the payload": sign_segments(
            header, payload[:10] + "!" + payload[11:]
        ),
        "whitespace in the payload": sign_segments(header, payload[:10] + "\n" + payload[10:]),
        "non-ASCII character": sign_segments(header, payload[:10] + "é" + payload[10:]),
        "segment of 4n+1 characters": sign_segments(header, segment(claims()) + "A"),
        "non-canonical payload (4n+3)": sign_segments(header, non_canonical(odd)),
        "non-canonical payload (4n+2)": sign_segments(header, non_canonical(even)),
        "non-canonical signature": with_signature(good, non_canonical(signature)),
        "63-byte signature": with_signature(good, b64(raw_signature(good)[:63])),
        "65-byte signature": with_signature(good, b64(raw_signature(good) + b"\0")),
        "DER-encoded signature": with_signature(good, b64(der)),
        "empty signature": f"{header}.{payload}.",
        "four segments": f"{good}.{signature}",
        "header not JSON": sign_segments(b64(b"not json"), payload),
        "header a string": sign_segments(segment("ES256"), payload),
        "header null": sign_segments(segment(None), payload),
        "payload a string": sign_segments(header, segment("sub")),
        "payload not UTF-8": sign_segments(header, b64(b'{"sub": "\xff"}')),
        "deeply nested header": sign_segments(b64(b"[" * 380), payload),
        "header over 512 characters": sign(claims(), {**HEADER, "kid": "k1" + " " * 400}),
        "embedded jwk": sign_segments(segment({**HEADER, "jwk": PUBLIC.as_dict()}), payload),
        "unencoded payload (b64 false)": sign_segments(
            segment({**HEADER, "b64": False, "crit": ["b64"]}), payload
        ),
        "alg ES256 twice, the last none": sign_segments(
            b64(b'{"alg": "ES256", "typ": "at+jwt", "kid": "k1", "alg": "none"}'), payload
        ),
        "typ missing": sign_segments(segment({"alg": "ES256", "kid": "k1"}), payload),
        "kid empty": sign_segments(segment({**HEADER, "kid": ""}), payload),
        "kid null": sign_segments(segment({**HEADER, "kid": None}), payload),
    }


@pytest.mark.parametrize("name", sorted(parsing_refusals()))
def test_refused_by_the_parser(name: str) -> None:
    token = parsing_refusals()[name]
    with pytest.raises(TokenInvalid):
        verify(token)
    with pytest.raises(TokenInvalid):
        verify(token, KEYS)


def test_the_signing_helper_makes_tokens_that_verify() -> None:
    header, payload, _ = sign(claims()).split(".")
    assert verify(sign_segments(header, payload)) == claims()
    assert verify(sign_segments(header, payload_of_length_mod_4(3)))["pad"] is not None
    assert verify(sign_segments(header, payload_of_length_mod_4(2)))["pad"] is not None


def test_a_token_given_as_bytes_is_refused() -> None:
    with pytest.raises(TokenInvalid):
        verify(sign(claims()).encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "parameters",
    [{"use": "enc"}, {"alg": "ES384"}, {"key_ops": ["sign"]}],
    ids=["use enc", "alg ES384", "key_ops without verify"],
)
def test_a_key_not_meant_for_es256_signatures_is_refused(parameters: dict[str, Any]) -> None:
    restricted = ECKey.import_key({**PUBLIC.as_dict(), **parameters})
    with pytest.raises(TokenInvalid):
        verify(sign(claims()), restricted)


def test_a_key_of_another_type_or_curve_is_refused() -> None:
    p384 = ECKey.generate_key("P-384", parameters={"kid": "k1"})
    rsa = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    for key in (p384, rsa, OctKey.import_key(b"s" * 32, {"kid": "k1"})):
        with pytest.raises(TokenInvalid):
            verify(sign(claims()), key)


def test_what_was_verified_once_is_not_trusted_the_next_time() -> None:
    """Header and key are remembered, but the key is still asked for by kid, and a
    different key object under the same kid verifies on its own."""
    token = sign(claims())
    assert verify(token) == claims()

    def rotated_away(kid: str) -> ECKey:
        raise TokenInvalid()

    with pytest.raises(TokenInvalid):
        verify_jwt(token, rotated_away, ISSUER, AUDIENCE, NOW)
    replaced = ECKey.import_key({**OTHER.as_dict(private=False), "kid": "k1"})
    with pytest.raises(TokenInvalid):
        verify(token, replaced)
    with pytest.raises(TokenInvalid):
        verify(token, KeySet([replaced]))
    assert verify(token, PUBLIC) == claims()


def test_a_key_lookup_failing_with_key_error_is_a_refusal() -> None:
    with pytest.raises(TokenInvalid):
        verify_jwt(sign(claims()), {}.__getitem__, ISSUER, AUDIENCE, NOW)
