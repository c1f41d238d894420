"""The OpenAPI document at /v1/openapi.json is valid and says what the service does
(issue 15, point 3): a valid OpenAPI 3.0 document, security schemes and per-operation
security derived from the public endpoints, problem+json errors of the real shape, the
OAuth forms and X-Subject-Token, and a client generated from it that works.

schemathesis checks every answer against the document (tests/attacks/test_schemathesis.py).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from openapi_spec_validator import validate
from werkzeug.serving import make_server

from latchkey.frontdoors.http.requests import PUBLIC_ENDPOINTS
from tests.conftest import (
    ADMIN_PASSWORD,
    build_app,
    make_settings,
    password_auth,
    reset_database,
)

PROBLEM = "application/problem+json"
METHODS = ("get", "put", "post", "patch", "delete", "head")


@pytest.fixture
def document(sqlite_app: Flask) -> dict[str, Any]:
    response = sqlite_app.test_client().get("/v1/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.get_json()
    return doc


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _problem_validator(document: dict[str, Any]) -> jsonschema.Draft4Validator:
    schema = dict(document["components"]["schemas"]["Problem"])
    return jsonschema.Draft4Validator(schema)


def test_the_document_is_valid_openapi_3_0(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0")
    validate(document)  # raises on any violation of the OpenAPI 3.0 schema
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids)) and len(ids) >= 50


def test_every_error_is_problem_json_of_the_shape_sent(
    sqlite_app: Flask, document: dict[str, Any]
) -> None:
    for path, method, operation in _operations(document):
        responses = operation["responses"]
        assert "default" not in responses, (path, method)
        errors = {int(s): _resolve(document, r) for s, r in responses.items() if int(s) >= 400}
        assert {422, 503} <= errors.keys(), (path, method)
        for status, response in errors.items():
            content = response.get("content", {})
            if path.startswith("/oauth2/") and status in (400, 401):
                assert list(content) == ["application/json"], (path, status)
                continue
            if path == "/readyz" and status == 503:
                continue  # not an error but the readiness report, saying what is missing
            assert list(content) == [PROBLEM], (path, method, status)
            assert "X-Request-Id" in response["headers"]
        if 429 in errors:
            assert errors[429]["headers"]["Retry-After"]["required"] is True
        assert path == "/readyz" or "Retry-After" in errors[503]["headers"]
    assert "Error" not in document["components"]["schemas"]  # flask-smorest's, never sent

    # The real answers match the Problem schema: a 404 and a 422 with `errors`.
    client = sqlite_app.test_client()
    token = client.post(
        "/v1/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, project="admin")
    ).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    validator = _problem_validator(document)
    missing = client.get("/v1/projects/nope", headers=headers)
    invalid = client.post("/v1/projects", json={"name": 5}, headers=headers)
    for answer, status in ((missing, 404), (invalid, 422)):
        assert answer.status_code == status and answer.mimetype == PROBLEM
        validator.validate(answer.get_json())
    assert "errors" in invalid.get_json()
    assert 404 in {
        int(s) for s in document["paths"]["/v1/projects/{project_id}"]["get"]["responses"]
    }


def test_security_follows_the_public_endpoints(sqlite_app: Flask, document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["oauthClientBasic"]["scheme"] == "basic"
    public_paths = set()
    for rule in sqlite_app.url_map.iter_rules():
        for method in rule.methods or ():
            if (rule.endpoint, method) in PUBLIC_ENDPOINTS:
                path = rule.rule.replace("<", "{").replace(">", "}")
                public_paths.add((path, method.lower()))
    seen_public = 0
    for path, method, operation in _operations(document):
        security = operation["security"]
        if (path, "get" if method == "head" else method) in public_paths:
            seen_public += 1
            assert security == [] or {} in security, (path, method, security)
        else:
            assert security == [{"bearerAuth": []}, {"authToken": []}], (path, method)
    assert seen_public >= 8  # login, JWKS, health, readiness, metrics, the OAuth four
    token_op = document["paths"]["/oauth2/token"]["post"]
    assert {"oauthClientBasic": []} in token_op["security"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert {"metricsToken": []} in document["paths"]["/metrics"]["get"]["security"]


def test_the_oauth_forms_and_the_subject_token_are_documented(document: dict[str, Any]) -> None:
    form = "application/x-www-form-urlencoded"
    paths = document["paths"]
    token = paths["/oauth2/token"]["post"]
    fields = token["requestBody"]["content"][form]["schema"]["properties"]
    assert {"grant_type", "client_id", "client_secret", "scope"} <= fields.keys()
    ok = token["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"access_token", "token_type", "expires_in"} <= set(ok["required"])
    assert "403" not in token["responses"]  # a refused client is OAuth's 400/401
    for door in ("/oauth2/introspect", "/oauth2/revoke"):
        body = paths[door]["post"]["requestBody"]["content"][form]["schema"]
        assert {"token", "token_type_hint", "client_id", "client_secret"} <= body[
            "properties"
        ].keys()
    introspection = paths["/oauth2/introspect"]["post"]["responses"]["200"]
    assert introspection["content"]["application/json"]["schema"]["required"] == ["active"]
    oauth_error = _resolve(document, paths["/oauth2/token"]["post"]["responses"]["400"])
    schema = _resolve(document, oauth_error["content"]["application/json"]["schema"])
    assert schema["required"] == ["error"] and "error_description" in schema["properties"]
    for method in ("get", "delete", "head"):
        parameters = paths["/v1/auth/tokens"][method]["parameters"]
        assert {"in": "header", "name": "X-Subject-Token", "required": True} in [
            {k: p[k] for k in ("in", "name", "required")} for p in parameters
        ], method


def _conforms(document: dict[str, Any], path: str, method: str, answer: Any) -> None:
    """The answer is one the document describes: status, media type, body, headers."""
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses, (path, answer.status_code)
    described = _resolve(document, responses[str(answer.status_code)])
    content = described["content"][answer.mimetype]
    schema = _resolve(document, content["schema"])
    jsonschema.Draft4Validator(schema).validate(answer.get_json())
    for name, header in described.get("headers", {}).items():
        header = _resolve(document, header)
        if header.get("required"):
            assert name in answer.headers, (path, answer.status_code, name)
        if name in answer.headers and header["schema"].get("type") == "integer":
            assert answer.headers[name].isdigit(), (name, answer.headers[name])


def test_throttled_and_oauth_errors_are_as_documented(
    document: dict[str, Any], tmp_path: Path
) -> None:
    app = build_app(
        make_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'latchkey.db'}",
            ratelimit_auth_per_source="2 per minute",
        )
    )
    reset_database(app)
    client = app.test_client()
    wrong = password_auth("admin", "wrong")
    answers = [client.post("/v1/auth/tokens", json=wrong) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]
    for answer in answers:
        _conforms(document, "/v1/auth/tokens", "post", answer)
    fresh = build_app(make_settings(tmp_path / "2", f"sqlite:///{tmp_path / 'oauth.db'}"))
    reset_database(fresh)
    oauth = fresh.test_client()
    form = {"grant_type": "client_credentials", "client_id": "nope", "client_secret": "x"}
    refused = oauth.post("/oauth2/token", data=form)
    assert refused.status_code in (400, 401) and refused.get_json()["error"] == "invalid_client"
    _conforms(document, "/oauth2/token", "post", refused)
    no_token = oauth.post("/oauth2/introspect", data={"client_id": "nope"})
    _conforms(document, "/oauth2/introspect", "post", no_token)


# -- a generated client -----------------------------------------------------------------


@pytest.fixture
def served(sqlite_app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, sqlite_app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_a_generated_python_client_logs_in_and_lists_projects(
    document: dict[str, Any], served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": "latchkey_client"}))
    generator = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "latchkey_client"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The generator warns about what it could not model: nothing may be skipped.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    client_pkg = importlib.import_module("latchkey_client")
    post_tokens = importlib.import_module("latchkey_client.api.tokens.post_tokens")
    get_projects = importlib.import_module("latchkey_client.api.identity.get_projects")
    models = importlib.import_module("latchkey_client.models")

    anonymous = client_pkg.Client(base_url=served)
    body = models.TokenRequest.from_dict(password_auth("admin", ADMIN_PASSWORD, project="admin"))
    issued = post_tokens.sync_detailed(client=anonymous, body=body)
    assert issued.status_code == 201, issued.content
    token = issued.parsed.token
    assert issued.parsed.roles and "admin" in issued.parsed.roles

    authenticated = client_pkg.AuthenticatedClient(base_url=served, token=token)
    listed = get_projects.sync(client=authenticated)
    assert [project.name for project in listed.projects] == ["admin"]

    refused = post_tokens.sync_detailed(
        client=anonymous, body=models.TokenRequest.from_dict(password_auth("admin", "wrong"))
    )
    assert refused.status_code == 401
    assert refused.parsed.code == "authentication_failed"  # the Problem model
