"""Issue 13, class 10: browser-facing defaults on every answer, HSTS over TLS,
a protected /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import ADMIN_PASSWORD, build_app, make_settings, password_auth, reset_database

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def assert_defended(response: TestResponse, what: str) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (what, name, dict(response.headers))
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, what
    assert "Strict-Transport-Security" not in response.headers, what  # plain HTTP


def own_app(tmp_path: Path, **overrides: Any) -> Flask:
    app = build_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", **overrides))
    reset_database(app)
    return app


def test_every_answer_carries_the_headers(client: FlaskClient) -> None:
    token = client.post("/v1/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD)).get_json()
    answers = {
        "health": client.get("/healthz"),
        "openapi": client.get("/v1/openapi.json"),
        "jwks": client.get("/.well-known/jwks.json"),
        "login": client.post("/v1/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD)),
        "wrong password": client.post("/v1/auth/tokens", json=password_auth("admin", "nope")),
        "no token": client.get("/v1/projects"),
        "bad token": client.get("/v1/projects", headers={"Authorization": "Bearer x"}),
        "not found": client.get("/no/such/path"),
        "method": client.delete("/healthz"),
        "invalid": client.post("/v1/auth/tokens", json={"auth": {}}),
        "malformed": client.post(
            "/v1/auth/tokens", data="{", headers={"Content-Type": "application/json"}
        ),
        "too large": client.post(
            "/v1/auth/tokens", data=b"x" * 2_000_000, headers={"Content-Type": "application/json"}
        ),
        "keystone": client.get("/v3"),
        "keystone 404": client.get("/v3/no/such"),
        "keystone 401": client.get("/v3/auth/projects"),
        "oauth error": client.post("/oauth2/token", data={"grant_type": "client_credentials"}),
        "oauth metadata": client.get("/.well-known/oauth-authorization-server"),
        "metrics": client.get("/metrics"),
    }
    assert token["token"]
    for what, response in answers.items():
        assert response.status_code < 500, what
        assert_defended(response, what)


def test_throttled_answers_carry_the_headers(tmp_path: Path) -> None:
    app = own_app(tmp_path, ratelimit_auth_per_source="1 per minute")
    client = app.test_client()
    client.post("/v1/auth/tokens", json=password_auth("admin", "wrong"))
    throttled = client.post("/v1/auth/tokens", json=password_auth("admin", "wrong"))
    assert throttled.status_code == 429
    assert_defended(throttled, "429")


def test_hsts_only_over_tls(tmp_path: Path) -> None:
    app = own_app(tmp_path, trusted_proxies="10.0.0.0/8")
    client = app.test_client()
    hsts = "Strict-Transport-Security"
    assert hsts not in client.get("/healthz").headers
    direct_tls = client.get("/healthz", base_url="https://latchkey.example")
    assert direct_tls.headers[hsts] == "max-age=31536000"
    assert hsts in client.get("/no/such", base_url="https://latchkey.example").headers
    # TLS ended at a trusted proxy, which says so.
    via_proxy = client.get(
        "/healthz",
        headers={"X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert via_proxy.headers[hsts] == "max-age=31536000"
    # Anyone else saying so is not believed.
    spoofed = client.get(
        "/healthz",
        headers={"X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    )
    assert hsts not in spoofed.headers


def test_hsts_can_be_turned_off(tmp_path: Path) -> None:
    app = own_app(tmp_path, hsts_max_age_seconds=0)
    response = app.test_client().get("/healthz", base_url="https://latchkey.example")
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic c2NyYXBlcjpzM2NyZXQ=", "Bearer s3cret-metrics-tokenX"],
)
def test_metrics_token_protects_metrics(tmp_path: Path, authorization: str | None) -> None:
    app = own_app(tmp_path, metrics_token="s3cret-metrics-token")
    client = app.test_client()
    headers = {"Authorization": authorization} if authorization else {}
    refused = client.get("/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.get_json()["code"] == "metrics_token_required"
    assert "latchkey_http_requests_total" not in refused.get_data(as_text=True)
    allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert allowed.status_code == 200
    assert "latchkey_http_requests_total" in allowed.get_data(as_text=True)
