"""Class 8 of issue 13: signatures are canonical.

An ECDSA signature ``(r, s)`` has a twin ``(r, n - s)`` that verifies just as well: the
same claims under a second token string. Latchkey issues the low-S form only
(``s <= n/2``) and every check of a token, Latchkey's own (bearer tokens, ``GET
/v1/auth/tokens``, ``/v3/auth/tokens``, OAuth introspection) and
``latchkey.middleware``'s, refuses the high-S twin of a real token, also right after
the original was verified and cached, while the original keeps working.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from flask import Flask
from joserfc.jwk import ECKey

from latchkey.identity.models import Domain, User
from latchkey.tokens.service import Scope, TokenInvalid
from latchkey.wire.jws import P256_HALF_ORDER, P256_ORDER, canonical_token, is_canonical, low_s
from tests.conftest import Api
from tests.integration import test_middleware as middleware_tests
from tests.integration.test_oauth import (
    INTROSPECT_URL,
    access_token,
    basic,
    credential_for,
    introspect,
)

# A real Latchkey served over HTTP and a relying service (tests/integration/test_middleware.py).
served = middleware_tests.served
env = middleware_tests.env
Env, call, refused = middleware_tests.Env, middleware_tests.call, middleware_tests.refused

ISSUANCES = 64  # P(all 64 low S by chance) = 2**-64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(_unb64(token.split(".")[1]))
    return claims


def r_s(token: str) -> tuple[int, int]:
    signature = _unb64(token.split(".")[2])
    assert len(signature) == 64
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")


def twin(token: str) -> str:
    """The same token with ``s`` replaced by ``n - s``: a valid ES256 signature of the
    same header and claims, in its high-S form."""
    r, s = r_s(token)
    assert s <= P256_HALF_ORDER, "Latchkey issued a high-S signature"
    signing_input = token.rsplit(".", 1)[0]
    other = P256_ORDER - s
    assert other > P256_HALF_ORDER
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + other.to_bytes(32, 'big'))}"


def assert_valid_ecdsa(app: Flask, token: str) -> None:
    """A plain ES256 verifier (no low-S rule) accepts ``token``: the twin is a real
    signature, refused only for being the non-canonical one."""
    header = json.loads(_unb64(token.split(".")[0]))
    jwk = next(k for k in published_keys(app) if k["kid"] == header["kid"])
    public = ECKey.import_key(jwk).get_op_key("verify")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    r, s = r_s(token)
    signing_input = token.rsplit(".", 1)[0].encode()
    public.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))


def published_keys(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        keys: list[dict[str, Any]] = app.extensions["latchkey"].keys.jwks()["keys"]
        return keys


def subject_status(api: Api, caller: str, subject: str, path: str = "/v1/auth/tokens") -> int:
    headers = {"X-Subject-Token": subject}
    if path.startswith("/v3"):
        headers["X-Auth-Token"] = caller
        return api.client.get(path, headers=headers).status_code
    return api.call("GET", path, caller, headers=headers).status_code


# -- issuance ------------------------------------------------------------------------------


def test_every_issued_token_has_low_s(app: Flask, api: Api, admin_token: str) -> None:
    with app.app_context():
        services = app.extensions["latchkey"]
        user = services.accounts.user_row(claims_of(admin_token)["sub"])
        domain = services.directory.domain_row(user.domain_id)
        assert isinstance(user, User) and isinstance(domain, Domain)
        issued = [
            services.tokens.issue(user, domain, Scope(), set(), ["password"]).token
            for _ in range(ISSUANCES)
        ]
    # ... and through every door that hands out a token: password, credential, OAuth,
    # OAuth narrowed by scope (re-signed).
    cred = credential_for(api, admin_token, "member")
    for _ in range(8):
        issued.append(api.admin_token())
        issued.append(access_token(api, cred))
        issued.append(access_token(api, cred, scope="reader"))
    highs = [token for token in issued if r_s(token)[1] > P256_HALF_ORDER]
    assert highs == [], f"{len(highs)} of {len(issued)} tokens carry a high S"


def test_the_canonical_form_helpers() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    seen_high = False
    for i in range(32):
        r, s = decode_dss_signature(key.sign(b"m%d" % i, ec.ECDSA(hashes.SHA256())))
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        seen_high |= s > P256_HALF_ORDER
        canonical = low_s(raw)
        assert is_canonical(canonical)
        assert int.from_bytes(canonical[32:], "big") == min(s, P256_ORDER - s)
        token = "e30.e30." + _b64(raw)
        assert canonical_token(token) == "e30.e30." + _b64(canonical)
        assert canonical_token(canonical_token(token)) == canonical_token(token)
    assert seen_high  # the library does produce high S: the rewrite is needed
    assert not is_canonical(b"\0" * 64)  # r = s = 0
    assert not is_canonical(P256_ORDER.to_bytes(32, "big") + (1).to_bytes(32, "big"))  # r = n


# -- Latchkey's own checks -----------------------------------------------------------------


def test_latchkey_refuses_the_high_s_twin(app: Flask, api: Api, admin_token: str) -> None:
    token = api.admin_token()
    high = twin(token)
    assert_valid_ecdsa(app, high)
    # Validated (and cached: the second verification admits it) before the twin is tried.
    for _ in range(3):
        assert subject_status(api, admin_token, token) == 200
    # GET /v1/auth/tokens: the twin is no token.
    assert subject_status(api, admin_token, high) == 404
    # As a bearer token.
    answer = api.call("GET", "/v1/auth/tokens", high, headers={"X-Subject-Token": token})
    assert answer.status_code == 401 and answer.get_json()["code"] == "invalid_token"
    # Keystone's validation, as subject and as the caller's own token.
    assert subject_status(api, admin_token, high, "/v3/auth/tokens") == 404
    assert subject_status(api, high, token, "/v3/auth/tokens") == 401
    # The cache held the original, the service's own validation never admits the twin.
    with app.app_context():
        tokens = app.extensions["latchkey"].tokens
        for _ in range(3):
            with pytest.raises(TokenInvalid):
                tokens.validate(high)
        assert tokens.validate(token)["jti"]
    # The original still works everywhere.
    assert subject_status(api, admin_token, token) == 200
    assert subject_status(api, admin_token, token, "/v3/auth/tokens") == 200
    assert (
        api.call("GET", "/v1/auth/tokens", token, headers={"X-Subject-Token": token}).status_code
        == 200
    )


def test_introspection_calls_the_twin_inactive(app: Flask, api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token, "member")
    token = access_token(api, cred)
    high = twin(token)
    assert_valid_ecdsa(app, high)
    assert introspect(api, cred, token)["active"] is True
    assert introspect(api, cred, token)["active"] is True  # cached now
    assert introspect(api, cred, high) == {"active": False}
    # Revoking by the twin revokes nothing: the original stays active.
    response = api.client.post(
        "/oauth2/revoke", data={"token": high}, headers=basic(cred["id"], cred["secret"])
    )
    assert response.status_code == 200
    assert introspect(api, cred, token)["active"] is True
    assert api.client.post(INTROSPECT_URL, data={"token": high}).status_code == 401


# -- latchkey.middleware -------------------------------------------------------------------


def test_the_middleware_refuses_the_twin_even_after_caching_the_original(env: Env) -> None:
    middleware = env.middleware()
    token = env.alice
    high = twin(token)
    assert_valid_ecdsa(env.served.app, high)
    for _ in range(3):  # verified, then served from the verified-token cache
        assert call(middleware, token).status_code == 200
    refused(call(middleware, high), 401, "invalid_token")
    refused(call(middleware, high, header="X-Auth-Token"), 401, "invalid_token")
    assert call(middleware, token).status_code == 200
    # A middleware that has never seen the original refuses it too.
    refused(call(env.middleware(), high), 401, "invalid_token")


def test_the_middleware_imports_without_flask_or_sqlalchemy() -> None:
    program = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('flask', 'flask_sqlalchemy', 'sqlalchemy'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import latchkey.middleware, latchkey.wire.jws\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
