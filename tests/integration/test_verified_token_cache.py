"""Each worker keeps tokens it verified twice (latchkey/tokens/service.py).

The cache holds what depends on the token alone (signature, claims); revocation
is checked on every call, expiry and the key's retirement end an entry.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from latchkey.tokens import service as tokens_module
from latchkey.tokens.service import TokenInvalid, VerifiedClaims
from latchkey.wire import jws as jws_module
from tests.conftest import Api


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the full verifications (a spy around verify_jwt, which still runs)."""
    seen: list[str] = []
    real = tokens_module.verify_jwt

    def counting(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(tokens_module, "verify_jwt", counting)
    return seen


def test_verified_twice_then_served_until_revoked(
    app: Flask, api: Api, verifications: list[str]
) -> None:
    token = api.admin_token()
    with app.app_context():
        tokens = app.extensions["latchkey"].tokens
        for _ in range(5):
            assert tokens.validate(token)["jti"]
    assert verifications == [token, token]
    revoked = api.call("DELETE", "/v1/auth/tokens", token, headers={"X-Subject-Token": token})
    assert revoked.status_code == 204, revoked.get_json()
    with app.app_context(), pytest.raises(TokenInvalid):
        app.extensions["latchkey"].tokens.validate(token)


class Later:
    """The token modules' view of the clock, moved past every token's exp."""

    @staticmethod
    def time() -> float:
        return _real_time() + 10 * 24 * 3600


_real_time = time.time


def test_a_cached_token_expires(
    app: Flask, api: Api, verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = api.admin_token()
    with app.app_context():
        tokens = app.extensions["latchkey"].tokens
        tokens.validate(token)
        tokens.validate(token)
        monkeypatch.setattr(tokens_module, "time", Later)
        monkeypatch.setattr(jws_module, "time", Later)  # verify_jwt's clock
        with pytest.raises(TokenInvalid):
            tokens.validate(token)
    assert verifications == [token, token, token]  # the cache did not answer


def test_bounded_and_switchable() -> None:
    cache = VerifiedClaims(2)
    for name in ("a", "b", "c"):
        cache.remember(name, ({"exp": 0}, "k"))
        cache.remember(name, ({"exp": 0}, "k"))
    assert cache.get("a") is None and cache.get("c") is not None
    off = VerifiedClaims(0)
    off.remember("a", ({"exp": 0}, "k"))
    off.remember("a", ({"exp": 0}, "k"))
    assert off.get("a") is None


def test_a_callers_context_is_kept_with_its_verified_claims(app: Flask, api: Api) -> None:
    """``Tokens.context_of`` serves the AuthContext it built only while the verified
    cache serves the very claims it was built from; revocation is still checked first."""
    token = api.admin_token()
    with app.app_context():
        tokens = app.extensions["latchkey"].tokens
        first = tokens.authenticate_bearer(token)  # verified once: nothing kept yet
        second = tokens.authenticate_bearer(token)  # verified twice: claims kept
        assert tokens.authenticate_bearer(token) is second
        assert first is not second and first == second
        tokens._verified.discard(token)  # as expiry or a retired key does
        rebuilt = tokens.authenticate_bearer(token)
        assert rebuilt is not second and rebuilt == second
    revoked = api.call("DELETE", "/v1/auth/tokens", token, headers={"X-Subject-Token": token})
    assert revoked.status_code == 204, revoked.get_json()
    with app.app_context(), pytest.raises(TokenInvalid):
        app.extensions["latchkey"].tokens.authenticate_bearer(token)
