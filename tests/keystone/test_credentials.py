"""Keystone's /v3/credentials, OS-EC2, /v3/ec2tokens and /v3/s3tokens (issue 14)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from latchkey.audit import AuditEvent
from latchkey.credentials.keystone import CredentialSealer
from latchkey.credentials.models import KeystoneCredential
from latchkey.errors import ServiceUnavailable
from latchkey.frontdoors.http.requests import is_public
from latchkey.tokens import ec2 as ec2_signatures
from tests.conftest import Api, build_app, database_of, make_settings
from tests.integration.test_openstack_clients import (  # noqa: F401 (fixtures)
    Served,
    latchkey,
    openstack,
    openstack_json,
    openstack_venv,
    password_env,
)

PASSWORD = "credential-password-1234"
SUBJECT = "X-Subject-Token"


@dataclass
class World:
    app: Flask
    api: Api
    admin: str
    p1: str
    p2: str
    alice: str
    alice_token: str
    bob: str
    bob_token: str

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> Any:
        headers = {"X-Auth-Token": token} if token else {}
        return self.api.client.open(path, method=method, json=body, headers=headers)

    def ok(self, method: str, path: str, token: str | None, body: Any = None) -> Any:
        response = self.call(method, path, token, body)
        expected = {"POST": 201, "DELETE": 204}.get(method, 200)
        assert response.status_code == expected, (method, path, response.get_json())
        return response.get_json(silent=True)


def _user(api: Api, admin: str, name: str) -> str:
    return str(api.ok("POST", "/v1/users", admin, {"name": name, "password": PASSWORD})["id"])


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    p1 = str(api.ok("POST", "/v1/projects", admin_token, {"name": "p1"})["id"])
    p2 = str(api.ok("POST", "/v1/projects", admin_token, {"name": "p2"})["id"])
    alice = _user(api, admin_token, "alice")
    bob = _user(api, admin_token, "bob")
    for user in (alice, bob):
        api.ok("PUT", f"/v1/projects/{p1}/users/{user}/roles/member", admin_token)
    api.ok("PUT", f"/v1/projects/{p1}/users/{bob}/roles/admin", admin_token)
    return World(
        app=app,
        api=api,
        admin=admin_token,
        p1=p1,
        p2=p2,
        alice=alice,
        alice_token=api.login("alice", PASSWORD, project="p1"),
        bob=bob,
        bob_token=api.login("bob", PASSWORD, project="p1"),
    )


def services_of(app: Flask) -> Any:
    return app.extensions["latchkey"]


def ec2_blob(access: str, secret: str) -> str:
    return json.dumps({"access": access, "secret": secret})


def keystone_error(response: Any, status: int) -> None:
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == status and error["title"] and error["message"]


# -- /v3/credentials -------------------------------------------------------------------


def test_credentials_crud_as_tempest_does(world: World) -> None:
    blob = ec2_blob("Access-1", "Secret-1")
    body = {"credential": {"user_id": world.alice, "project_id": world.p1, "blob": blob}}
    body["credential"]["type"] = "ec2"
    created = world.ok("POST", "/v3/credentials", world.admin, body)["credential"]
    assert created["id"] == hashlib.sha256(b"Access-1").hexdigest()
    assert created["blob"] == blob and created["type"] == "ec2"
    assert created["user_id"] == world.alice and created["project_id"] == world.p1
    assert created["links"]["self"].endswith("/v3/credentials/" + created["id"])

    new_blob = ec2_blob("NewAccess", "NewSecret")
    path = "/v3/credentials/" + created["id"]
    updated = world.ok("PATCH", path, world.admin, {"credential": {"blob": new_blob}})
    assert updated["credential"]["id"] == created["id"]
    assert json.loads(updated["credential"]["blob"]) == json.loads(new_blob)
    assert world.ok("GET", path, world.admin)["credential"]["blob"] == new_blob

    other = {"user_id": world.alice, "type": "totp", "blob": "JBSWY3DPEHPK3PXP"}
    totp = world.ok("POST", "/v3/credentials", world.admin, {"credential": other})["credential"]
    ids = {c["id"] for c in world.ok("GET", "/v3/credentials", world.admin)["credentials"]}
    assert {created["id"], totp["id"]} <= ids
    only_ec2 = world.ok("GET", "/v3/credentials?type=ec2", world.admin)["credentials"]
    assert [c["id"] for c in only_ec2] == [created["id"]]
    by_user = world.ok("GET", f"/v3/credentials?user_id={world.bob}", world.admin)
    assert by_user["credentials"] == []

    world.ok("DELETE", path, world.admin)
    keystone_error(world.call("GET", path, world.admin), 404)


def test_blob_is_sealed_at_rest_and_never_audited(world: World) -> None:
    blob = ec2_blob("sealed-access", "very-secret-value")
    body = {"credential": {"user_id": world.alice, "project_id": world.p1, "type": "ec2"}}
    body["credential"]["blob"] = blob
    world.ok("POST", "/v3/credentials", world.alice_token, body)
    with world.app.app_context():
        row = database_of(world.app).session.scalars(select(KeystoneCredential)).one()
        assert b"very-secret-value" not in row.blob_sealed
        assert row.blob_sealed.startswith(b"kc1")
        events = database_of(world.app).session.scalars(select(AuditEvent)).all()
        assert all("very-secret-value" not in json.dumps(e.details or {}) for e in events)
        assert any(e.action == "identity:credential:create" for e in events)
        # Another worker (a sealer of its own) opens it with the key the store keeps.
        other = CredentialSealer(services_of(world.app).system_secrets)
        assert other.open(row.blob_sealed, row.id) == blob
        with pytest.raises(ServiceUnavailable):
            other.open(row.blob_sealed, "another-credential-id")


def test_bad_input_is_400_in_keystone_shape(world: World) -> None:
    cases: list[dict[str, Any]] = [
        {"user_id": world.alice, "type": "ec2", "blob": "not json", "project_id": world.p1},
        {
            "user_id": world.alice,
            "type": "ec2",
            "blob": ec2_blob("AKIDEXAMPLE", "s3cr3t-value"),
        },  # no project
        {"user_id": world.alice, "type": "ec2", "blob": '{"access": 1}', "project_id": world.p1},
        {"user_id": world.alice, "type": "", "blob": "x"},
        {"user_id": world.alice, "type": "cert", "blob": {"not": "a string"}},
        {"type": "cert", "blob": "x"},
    ]
    for case in cases:
        keystone_error(
            world.call("POST", "/v3/credentials", world.admin, {"credential": case}), 400
        )
    keystone_error(world.call("POST", "/v3/credentials", world.admin, {"credential": []}), 400)
    keystone_error(world.call("POST", "/v3/credentials", world.admin, [1]), 400)
    body = {
        "user_id": world.alice,
        "type": "ec2",
        "blob": ec2_blob("AKIDEXAMPLE", "s3cr3t-value"),
        "project_id": world.p1,
    }
    world.ok("POST", "/v3/credentials", world.admin, {"credential": body})
    keystone_error(world.call("POST", "/v3/credentials", world.admin, {"credential": body}), 409)


def test_users_manage_only_their_own(world: World) -> None:
    mine = {"user_id": world.alice, "type": "cert", "blob": "alice's certificate"}
    alices = world.ok("POST", "/v3/credentials", world.alice_token, {"credential": mine})
    path = "/v3/credentials/" + alices["credential"]["id"]
    # Bob is an admin of alice's project, not a cloud admin: alice's are not his.
    theirs = {"user_id": world.alice, "type": "cert", "blob": "bob's forgery"}
    keystone_error(
        world.call("POST", "/v3/credentials", world.bob_token, {"credential": theirs}), 403
    )
    keystone_error(world.call("GET", path, world.bob_token), 404)
    keystone_error(world.call("PATCH", path, world.bob_token, {"credential": {"blob": "x"}}), 404)
    keystone_error(world.call("DELETE", path, world.bob_token), 404)
    assert world.ok("GET", "/v3/credentials", world.bob_token)["credentials"] == []
    keystone_error(
        world.call("GET", f"/v3/credentials?user_id={world.alice}", world.bob_token), 403
    )
    listed = world.ok("GET", "/v3/credentials", world.alice_token)["credentials"]
    assert [c["id"] for c in listed] == [alices["credential"]["id"]]
    # A credential moves to no one else.
    move = {"credential": {"user_id": world.bob}}
    keystone_error(world.call("PATCH", path, world.alice_token, move), 400)
    keystone_error(world.call("GET", "/v3/credentials", None), 401)


def test_restricted_application_credential_touches_no_credential(world: World) -> None:
    created = world.ok(
        "POST",
        f"/v3/users/{world.alice}/application_credentials",
        world.alice_token,
        {"application_credential": {"name": "ci"}},
    )["application_credential"]
    response = world.api.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": created["id"], "secret": created["secret"]},
                }
            }
        },
    )
    restricted = response.headers[SUBJECT]
    world.ok(
        "POST",
        f"/v3/users/{world.alice}/credentials/OS-EC2",
        world.alice_token,
        {"tenant_id": world.p1},
    )
    ec2_path = f"/v3/users/{world.alice}/credentials/OS-EC2"
    keystone_error(world.call("POST", ec2_path, restricted, {"tenant_id": world.p1}), 403)
    keystone_error(world.call("GET", ec2_path, restricted), 403)
    keystone_error(world.call("GET", "/v3/credentials", restricted), 403)


# -- OS-EC2 ----------------------------------------------------------------------------


def test_ec2_credentials_of_a_user(world: World) -> None:
    base = f"/v3/users/{world.alice}/credentials/OS-EC2"
    created = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    assert created["access"] and created["secret"] and created["trust_id"] is None
    assert created["user_id"] == world.alice and created["tenant_id"] == world.p1
    second = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    listed = world.ok("GET", base, world.alice_token)["credentials"]
    assert {c["access"] for c in listed} == {created["access"], second["access"]}
    shown = world.ok("GET", f"{base}/{created['access']}", world.alice_token)["credential"]
    assert {k: shown[k] for k in ("access", "secret", "user_id", "tenant_id")} == {
        k: created[k] for k in ("access", "secret", "user_id", "tenant_id")
    }
    # The same store as /v3/credentials.
    same = world.ok(
        "GET", "/v3/credentials/" + ec2_signatures_id(created["access"]), world.alice_token
    )
    assert json.loads(same["credential"]["blob"])["secret"] == created["secret"]
    keystone_error(world.call("GET", f"{base}/{created['access']}", world.bob_token), 403)
    keystone_error(world.call("DELETE", f"{base}/{created['access']}", world.bob_token), 403)
    world.ok("DELETE", f"{base}/{created['access']}", world.alice_token)
    keystone_error(world.call("GET", f"{base}/{created['access']}", world.alice_token), 404)
    keystone_error(world.call("POST", base, world.alice_token, {"tenant_id": "nope"}), 404)
    keystone_error(world.call("POST", base, world.alice_token, {}), 400)
    admin_sees = world.ok("GET", base, world.admin)["credentials"]
    assert [c["access"] for c in admin_sees] == [second["access"]]


def ec2_signatures_id(access: str) -> str:
    return hashlib.sha256(access.encode()).hexdigest()


# -- signatures ------------------------------------------------------------------------


def test_v4_signing_key_matches_aws_published_example() -> None:
    # AWS's "Examples of how to derive a signing key for Signature Version 4".
    key = ec2_signatures.v4_signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_v4_signature_matches_aws_test_suite_get_vanilla() -> None:
    # AWS's Signature Version 4 test suite, "get-vanilla".
    credentials = {
        "access": "AKIDEXAMPLE",
        "host": "example.amazonaws.com",
        "verb": "GET",
        "path": "/",
        "params": {},
        "headers": {
            "Host": "example.amazonaws.com",
            "X-Amz-Date": "20150830T123600Z",
            "Authorization": "AWS4-HMAC-SHA256 "
            "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=x",
        },
        "body_hash": hashlib.sha256(b"").hexdigest(),
    }
    now = datetime(2015, 8, 30, 12, 40, tzinfo=UTC)
    signature = ec2_signatures.ec2_signature(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", credentials, now
    )
    assert signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    with pytest.raises(ec2_signatures.SignatureRejected):  # replayed an hour later
        ec2_signatures.ec2_signature("x", credentials, now + timedelta(hours=1))


def _sign_v4(secret: str, access: str, host: str, body: bytes) -> dict[str, Any]:
    """A botocore-style query-protocol POST (EC2 API), signed per AWS's description."""
    now = datetime.now(UTC)
    date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{date[:8]}/RegionOne/ec2/aws4_request"
    body_hash = hashlib.sha256(body).hexdigest()
    headers = {
        "Host": host,
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Amz-Date": date,
    }
    signed = "content-type;host;x-amz-date"
    canonical = "\n".join(
        (
            "POST",
            "/",
            "",
            f"content-type:{headers['Content-Type']}\nhost:{host}\nx-amz-date:{date}\n",
            signed,
            body_hash,
        )
    )
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = ("AWS4" + secret).encode()
    for part in (date[:8], "RegionOne", "ec2", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return {
        "access": access,
        "signature": signature,
        "host": host,
        "verb": "POST",
        "path": "/",
        "params": {"Action": "DescribeRegions", "Version": "2013-10-15"},
        "headers": headers,
        "body_hash": body_hash,
    }


def _sign_v2(secret: str, access: str, host: str) -> dict[str, Any]:
    params = {
        "AWSAccessKeyId": access,
        "Action": "DescribeInstances",
        "SignatureMethod": "HmacSHA256",
        "SignatureVersion": "2",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2013-10-15",
    }
    query = "&".join(f"{k}={v}".replace(":", "%3A") for k, v in sorted(params.items()))
    to_sign = f"GET\n{host}\n/\n{query}"
    signature = base64.b64encode(
        hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    return {
        "access": access,
        "signature": signature,
        "host": host,
        "verb": "GET",
        "path": "/",
        "params": params,
        "headers": {},
        "body_hash": "",
    }


def test_ec2tokens_gives_a_project_token(world: World) -> None:
    base = f"/v3/users/{world.alice}/credentials/OS-EC2"
    ec2 = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    body = b"Action=DescribeRegions&Version=2013-10-15"
    for signed in (
        _sign_v4(ec2["secret"], ec2["access"], "nova.example:8773", body),
        _sign_v2(ec2["secret"], ec2["access"], "nova.example:8773"),
    ):
        for wrapper in ("credentials", "ec2Credentials"):
            response = world.api.client.post("/v3/ec2tokens", json={wrapper: signed})
            assert response.status_code == 200, response.get_json()
            token = response.get_json()["token"]
            assert token["methods"] == ["ec2credential"]
            assert token["user"]["id"] == world.alice
            assert token["project"]["id"] == world.p1
            assert "member" in [r["name"] for r in token["roles"]]
            subject = response.headers[SUBJECT]
            assert world.call("GET", "/v3/auth/projects", subject).status_code == 200
    # Signed without the port: Keystone tries again without it.
    unported = _sign_v2(ec2["secret"], ec2["access"], "nova.example")
    response = world.api.client.post(
        "/v3/ec2tokens", json={"credentials": {**unported, "host": "nova.example:8773"}}
    )
    assert response.status_code == 200


def test_ec2tokens_refuses_bad_signatures(world: World) -> None:
    base = f"/v3/users/{world.alice}/credentials/OS-EC2"
    ec2 = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    good = _sign_v4(ec2["secret"], ec2["access"], "nova.example", b"")
    bad_cases = [
        {**good, "signature": "0" * 64},
        {**good, "signature": None},
        {**good, "access": "unknown"},
        {**good, "access": None},
        {**good, "verb": "GET"},
        {**good, "headers": {**good["headers"], "X-Amz-Date": "20150830T123600Z"}},
        {**good, "params": {"SignatureVersion": "1"}},
        {**good, "params": "nope"},
        _sign_v4("wrong-secret", ec2["access"], "nova.example", b""),
    ]
    for case in bad_cases:
        response = world.api.client.post("/v3/ec2tokens", json={"credentials": case})
        keystone_error(response, 401)
    keystone_error(world.api.client.post("/v3/ec2tokens", json={"nothing": 1}), 401)
    keystone_error(world.api.client.post("/v3/ec2tokens", json=[1]), 400)
    # A user without roles on the credential's project gets no token.
    world.ok("DELETE", f"/v1/projects/{world.p1}/users/{world.alice}/roles/member", world.admin)
    response = world.api.client.post("/v3/ec2tokens", json={"credentials": good})
    keystone_error(response, 401)
    with world.app.app_context():
        failures = (
            database_of(world.app)
            .session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "identity:auth:ec2credential",
                    AuditEvent.outcome == "failure",
                )
            )
            .all()
        )
        assert len(failures) == len(bad_cases) + 1  # + the user without roles
        assert all(ec2["secret"] not in json.dumps(e.details or {}) for e in failures)


def test_s3tokens_v2_and_v4(world: World) -> None:
    base = f"/v3/users/{world.alice}/credentials/OS-EC2"
    ec2 = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    secret = ec2["secret"]
    stamp = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    v2 = f"GET\n\n\n{stamp}\n/bucket/object".encode()
    v2_signature = base64.b64encode(hmac.new(secret.encode(), v2, hashlib.sha1).digest()).decode()
    date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    v4 = f"AWS4-HMAC-SHA256\n{date}\n{date[:8]}/RegionOne/s3/aws4_request\n{'ab' * 32}".encode()
    key = ("AWS4" + secret).encode()
    for part in (date[:8], "RegionOne", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    v4_signature = hmac.new(key, v4, hashlib.sha256).hexdigest()
    for to_sign, signature in ((v2, v2_signature), (v4, v4_signature)):
        credentials = {
            "access": ec2["access"],
            "token": base64.urlsafe_b64encode(to_sign).decode(),
            "signature": signature,
        }
        response = world.api.client.post("/v3/s3tokens", json={"credentials": credentials})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["token"]["project"]["id"] == world.p1
        wrong = {**credentials, "signature": signature[:-2] + "AA"}
        keystone_error(world.api.client.post("/v3/s3tokens", json={"credentials": wrong}), 401)
    # A V2 request signed long ago is not a token now (its Date, or its x-amz-date).
    for old in (
        b"GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/bucket/object",
        b"GET\n\n\n\nx-amz-date:Tue, 27 Mar 2007 19:36:42 +0000\n/bucket/object",
        b"GET\n\n\n1175024202\n/bucket/object",  # presigned, expired
    ):
        signature = base64.b64encode(hmac.new(secret.encode(), old, hashlib.sha1).digest())
        replay = {
            "access": ec2["access"],
            "token": base64.urlsafe_b64encode(old).decode(),
            "signature": signature.decode(),
        }
        keystone_error(world.api.client.post("/v3/s3tokens", json={"credentials": replay}), 401)
    not_base64 = {"access": ec2["access"], "token": "%%%", "signature": "x"}
    keystone_error(world.api.client.post("/v3/s3tokens", json={"credentials": not_base64}), 401)


def test_ec2_doors_are_public_and_throttled(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    assert is_public("keystone.ec2_tokens", "POST") and is_public("keystone.s3_tokens", "POST")
    home = tmp_path_factory.mktemp("throttled")
    settings = make_settings(
        home,
        f"sqlite:///{home}/latchkey.db",
        ratelimit_auth_per_source="3 per minute",
        ratelimit_auth_per_account="100 per minute",
    )
    app = build_app(settings)
    client = app.test_client()
    bad = {"access": "guess", "signature": "x", "host": "h", "verb": "GET", "path": "/"}
    statuses = [
        client.post("/v3/ec2tokens", json={"credentials": bad}).status_code for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    response = client.post("/v3/s3tokens", json={"credentials": bad})
    keystone_error(response, 429)
    assert response.headers["Retry-After"]


# -- python-openstackclient ------------------------------------------------------------


def test_openstack_credential_and_ec2_commands(
    openstack_venv: Path,  # noqa: F811 (the fixture)
    latchkey: Served,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = (openstack_venv, tmp_path, password_env(latchkey))
    user = latchkey.admin_user_id
    blob = ec2_blob("cli-access", "cli-secret")
    # `credential create` looks its user up at /v3/users (another part of issue 14):
    # with it, the CLI creates; without it, the same request goes over HTTP.
    found = requests.get(
        f"{latchkey.url}/v3/users/{user}",
        headers={"X-Auth-Token": latchkey.admin_token},
        timeout=30,
    )
    if found.status_code == 200:
        created = openstack_json(
            *run,
            "credential",
            "create",
            "--type",
            "ec2",
            "--project",
            latchkey.admin_project_id,
            user,
            blob,
        )
    else:
        response = requests.post(
            f"{latchkey.url}/v3/credentials",
            json={
                "credential": {
                    "user_id": user,
                    "project_id": latchkey.admin_project_id,
                    "type": "ec2",
                    "blob": blob,
                }
            },
            headers={"X-Auth-Token": latchkey.admin_token},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        created = response.json()["credential"]
    assert created["id"] == hashlib.sha256(b"cli-access").hexdigest()
    listed = openstack_json(*run, "credential", "list")
    assert created["id"] in {row["ID"] for row in listed}
    shown = openstack_json(*run, "credential", "show", created["id"])
    assert json.loads(shown["blob"]) == json.loads(blob)
    openstack(*run, "credential", "delete", created["id"])

    ec2 = openstack_json(*run, "ec2", "credentials", "create")
    assert ec2["access"] and ec2["secret"]
    assert ec2["project_id"] == latchkey.admin_project_id
    accesses = {row["Access"] for row in openstack_json(*run, "ec2", "credentials", "list")}
    assert ec2["access"] in accesses
    assert openstack_json(*run, "ec2", "credentials", "show", ec2["access"])["secret"]
    openstack(*run, "ec2", "credentials", "delete", ec2["access"])
    gone = openstack(*run, "ec2", "credentials", "show", ec2["access"], ok=False)
    assert gone.returncode != 0


SIGNER = """
import json, sys
from keystoneclient.contrib.ec2.utils import Ec2Signer
request = json.load(sys.stdin)
secret = request.pop("secret")
print(Ec2Signer(secret).generate(request))
"""


def test_ec2tokens_accepts_keystoneclients_own_signer(
    openstack_venv: Path,  # noqa: F811 (the fixture)
    world: World,
) -> None:
    """Signatures computed by keystoneclient's Ec2Signer (Keystone's EC2 utilities)."""
    base = f"/v3/users/{world.alice}/credentials/OS-EC2"
    ec2 = world.ok("POST", base, world.alice_token, {"tenant_id": world.p1})["credential"]
    date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    v4_headers = {
        "Host": "Nova.Example:8773",
        "X-Amz-Date": date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ec2['access']}/{date[:8]}/RegionOne/"
        "ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=x",
    }
    v2_params = {
        "AWSAccessKeyId": ec2["access"],
        "Action": "DescribeInstances",
        "SignatureVersion": "2",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    requests_to_sign = [
        {"verb": "GET", "params": {"Action": "DescribeRegions"}, "headers": v4_headers},
        {"verb": "GET", "params": v2_params, "headers": {}},
    ]
    for shape in requests_to_sign:
        request = {
            "access": ec2["access"],
            "host": "Nova.Example:8773",
            "path": "/services/Cloud/",
            "body_hash": hashlib.sha256(b"").hexdigest(),
            **shape,
        }
        signed = subprocess.run(
            [str(openstack_venv / "bin" / "python"), "-c", SIGNER],
            input=json.dumps({**request, "secret": ec2["secret"]}),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        response = world.api.client.post(
            "/v3/ec2tokens", json={"credentials": {**request, "signature": signed}}
        )
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["token"]["user"]["id"] == world.alice


# -- OS-OAUTH1 consumers ---------------------------------------------------------------


def test_oauth1_consumers_crud_for_cloud_admins(world: World) -> None:
    base = "/v3/OS-OAUTH1/consumers"
    created = world.ok("POST", base, world.admin, {"consumer": {"description": "d1"}})
    consumer = created["consumer"]
    assert consumer["secret"] and consumer["description"] == "d1"
    path = f"{base}/{consumer['id']}"
    shown = world.ok("GET", path, world.admin)["consumer"]
    assert {k: shown[k] for k in ("id", "description", "links")} == {
        k: consumer[k] for k in ("id", "description", "links")
    }
    assert "secret" not in shown  # shown once
    with world.app.app_context():
        from latchkey.credentials.models import OAuth1Consumer

        row = database_of(world.app).session.get(OAuth1Consumer, consumer["id"])
        assert row is not None and consumer["secret"].encode() not in row.secret_sealed
    world.ok("PATCH", path, world.admin, {"consumer": {"description": "d2"}})
    assert world.ok("GET", path, world.admin)["consumer"]["description"] == "d2"
    second = world.ok("POST", base, world.admin, {"consumer": {}})["consumer"]
    listed = {c["id"] for c in world.ok("GET", base, world.admin)["consumers"]}
    assert {consumer["id"], second["id"]} <= listed
    # Not a project admin's (bob administers p1), nor anyone's but the cloud's.
    keystone_error(world.call("POST", base, world.bob_token, {"consumer": {}}), 403)
    keystone_error(world.call("DELETE", path, world.bob_token), 403)
    keystone_error(world.call("GET", base, world.alice_token), 403)
    keystone_error(world.call("PATCH", path, world.admin, {"consumer": {"secret": "x"}}), 400)
    keystone_error(world.call("PATCH", path, world.admin, {"consumer": {"description": 1}}), 400)
    world.ok("DELETE", path, world.admin)
    keystone_error(world.call("GET", path, world.admin), 404)


# -- domain configuration --------------------------------------------------------------

CUSTOM_CONFIG = {
    "identity": {"driver": "ldap"},
    "ldap": {"url": "ldap://myldap.com:389/", "user_tree_dn": "ou=Users,dc=my_new_root,dc=org"},
}


def test_domain_configuration_as_tempest_does(world: World) -> None:
    defaults = world.ok("GET", "/v3/domains/config/default", world.admin)["config"]
    assert {"identity", "ldap"} <= set(defaults)
    identity = world.ok("GET", "/v3/domains/config/identity/default", world.admin)["config"]
    assert {"driver", "list_limit"} <= set(identity["identity"])
    for option in world.ok("GET", "/v3/domains/config/ldap/default", world.admin)["config"]["ldap"]:
        path = f"/v3/domains/config/ldap/{option}/default"
        assert option in world.ok("GET", path, world.admin)["config"]

    domain = world.ok("POST", "/v1/domains", world.admin, {"name": "configured"})["id"]
    base = f"/v3/domains/{domain}/config"
    keystone_error(world.call("GET", base, world.admin), 404)
    response = world.call("PUT", base, world.admin, {"config": CUSTOM_CONFIG})
    assert response.status_code == 201 and response.get_json()["config"] == CUSTOM_CONFIG
    for group, options in CUSTOM_CONFIG.items():
        assert world.ok("GET", f"{base}/{group}", world.admin)["config"] == {group: options}
        for option, value in options.items():
            shown = world.ok("GET", f"{base}/{group}/{option}", world.admin)["config"]
            assert shown == {option: value}

    new = {**CUSTOM_CONFIG, "ldap": {**CUSTOM_CONFIG["ldap"], "url": "ldap://other.example/"}}
    assert world.ok("PATCH", base, world.admin, {"config": new})["config"] == new
    assert world.ok("GET", base, world.admin)["config"] == new

    group = {"identity": {"driver": "d2", "list_limit": 42}}
    updated = world.ok("PATCH", f"{base}/identity", world.admin, {"config": group})["config"]
    assert updated["identity"] == {"driver": "d2", "list_limit": 42}
    body = {"config": {"driver": "d3"}}
    updated = world.ok("PATCH", f"{base}/identity/driver", world.admin, body)["config"]
    assert updated["identity"]["driver"] == "d3"
    world.ok("DELETE", f"{base}/identity/driver", world.admin)
    keystone_error(world.call("GET", f"{base}/identity/driver", world.admin), 404)
    world.ok("DELETE", f"{base}/identity", world.admin)
    keystone_error(world.call("GET", f"{base}/identity", world.admin), 404)
    world.ok("DELETE", base, world.admin)
    keystone_error(world.call("GET", base, world.admin), 404)


def test_domain_configuration_refusals(world: World) -> None:
    domain = world.ok("POST", "/v1/domains", world.admin, {"name": "configured"})["id"]
    base = f"/v3/domains/{domain}/config"
    for bad in (
        {"nova": {"x": 1}},
        {"ldap": {"password": "bind-secret"}},  # the secret store's, via the domain's ldap
        {"ldap": {"no_such_option": "x"}},
        {"identity": {"driver": ["x"]}},
        {"identity": {}},
        {},
        "x",
    ):
        keystone_error(world.call("PUT", base, world.admin, {"config": bad}), 400)
    keystone_error(world.call("PUT", base, world.bob_token, {"config": CUSTOM_CONFIG}), 403)
    keystone_error(world.call("GET", "/v3/domains/config/default", world.alice_token), 403)
    body = {"config": CUSTOM_CONFIG}
    keystone_error(world.call("PUT", "/v3/domains/nope/config", world.admin, body), 404)
    keystone_error(world.call("GET", "/v3/domains/config/nova/default", world.admin), 404)
