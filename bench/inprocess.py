"""The two online paths timed in-process (no server): what Latchkey's own code costs.

    .venv/bin/python -m bench.inprocess [--requests 3000] [--rounds 5] [--database URL]
                                        [--only validate_v1|appcred_issue]

Builds an application with ``create_app`` on a fresh SQLite file (or ``--database``, an
empty PostgreSQL database), creates one application credential for the bootstrap admin,
and times through the test client: ``GET /v1/auth/tokens`` (online validation, the
``validate_v1`` row of ``make bench``) and ``POST /v1/auth/tokens`` with the application
credential (``appcred_issue``). Prints microseconds per request, the best of the rounds,
and how many SQL statements one request of each sends. Used to compare two checkouts
on one machine (a refactoring should move neither figure); the servers' ceilings and the
Keystone peer are ``make bench``'s business.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from flask_migrate import upgrade
from latchkey.app import create_app
from latchkey.settings import Settings
from sqlalchemy import event

PASSWORD = "inprocess-password"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default=None)
    parser.add_argument("--only", default=None, help="validate_v1 or appcred_issue")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="inprocess-"))
    settings = Settings.from_mapping(
        {
            "home": str(home),
            "database_url": args.database or f"sqlite:///{home / 'latchkey.db'}",
            "admin_password": PASSWORD,
            "log_level": "WARNING",
            "decision_record_percent": 0,
        }
    )
    app = create_app(settings)
    with app.app_context():
        upgrade()
        app.extensions["latchkey"].bootstrap.run(PASSWORD)
    client = app.test_client()

    def call(method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        response = client.open(path, method=method, json=body, headers=headers)
        if response.status_code >= 300:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.get_data()!r}")
        return response.get_json(silent=True)

    login = {
        "auth": {
            "password": {
                "user": {"name": "admin", "domain": {"id": "default"}},
                "password": PASSWORD,
            }
        },
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
    }
    admin = str(call("POST", "/v1/auth/tokens", {}, login)["token"])
    bearer = {"Authorization": f"Bearer {admin}"}
    claims = call("GET", "/v1/auth/tokens", {**bearer, "X-Subject-Token": admin})
    credential = call(
        "POST",
        f"/v1/users/{claims['sub']}/application-credentials",
        bearer,
        {"name": "inprocess", "project_id": claims["project"]["id"]},
    )
    issue = {"auth": {"application_credential": credential_auth(credential)}}
    validate = {**bearer, "X-Subject-Token": admin}
    paths = {
        "validate_v1": lambda: call("GET", "/v1/auth/tokens", validate),
        "appcred_issue": lambda: call("POST", "/v1/auth/tokens", {}, issue),
    }
    statements = count_statements(app)
    for name, request in paths.items():
        if args.only and name != args.only:
            continue
        for _ in range(200):  # warm: caches, the key ring, the verified-token memo
            request()
        best = min(timed(request, args.requests) for _ in range(args.rounds))
        statements.clear()
        request()
        print(f"{name}: {best:.1f} µs/request, {len(statements)} SQL statements", flush=True)


def credential_auth(created: dict[str, Any]) -> dict[str, str]:
    return {"id": created["id"], "secret": created["secret"]}


def timed(request: Any, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        request()
    return (time.perf_counter() - started) / count * 1e6


def count_statements(app: Any) -> list[str]:
    seen: list[str] = []
    with app.app_context():
        engine = app.extensions["latchkey"].credentials._session.get_bind()  # this app's engine

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    return seen


if __name__ == "__main__":
    main()
