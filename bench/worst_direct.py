"""The worst tenant document the default limits allow, timed in-process (no server).

    .venv/bin/python -m bench.worst_direct [--rounds 20]

Builds an application with ``create_app`` on a fresh SQLite file (the default
settings otherwise), puts the slowest allowed document (tests/attacks/worst_policy.py)
in a project, and times ``POST /v1/authorize/batch`` from a member through the test
client: the two batches that reach LATCHKEY_DECISION_MAX_COST, (a) 4 checks against
the ~50,000-unit document and (b) 1,000 checks against a ~200-unit one. Prints
p50 / p99 / max per batch and the answers' ``decided_by`` counts. The `worst_batch`
and `worst_batch1000` rows of ``make bench`` measure the same over HTTP.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flask_migrate import upgrade
from latchkey.app import create_app
from latchkey.settings import Settings
from tests.attacks.worst_policy import slow_pattern, worst_check, worst_document

from bench.seed import CONTAINER, OBJECTS_SERVICE

PASSWORD = "worst-direct-password"
READ = f"{CONTAINER}:read"
STRINGS = ["env", "team", "name", "owner_email"]
WORST_1000_LENGTH = 850  # a batch of 1,000 such checks is just under 1 MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="worst-direct-"))
    settings = Settings.from_mapping(
        {
            "home": str(home),
            "database_url": f"sqlite:///{home / 'latchkey.db'}",
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

    def call(method: str, path: str, token: str | None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.open(path, method=method, json=body, headers=headers)
        if response.status_code >= 300:
            raise SystemExit(
                f"{method} {path}: {response.status_code} {response.get_data()[:300]!r}"
            )
        return response.get_json(silent=True)

    def login(name: str, project: str) -> str:
        body = {
            "auth": {
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}},
                    "password": PASSWORD + ("" if name == "admin" else "-member"),
                }
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
        return str(call("POST", "/v1/auth/tokens", None, body)["token"])

    admin = login("admin", "admin")
    call("POST", "/v1/services", admin, OBJECTS_SERVICE)
    results = {}
    for label, pattern, checks, strings, length in (
        ("4 checks x 49,726 units", slow_pattern(), 4, STRINGS, 1024),
        # 1 MiB of body at most: one attribute, 850 characters.
        ("1,000 checks x 198 units", slow_pattern(52), 1000, ["env"], WORST_1000_LENGTH),
    ):
        name = f"p{len(results)}"
        project = call("POST", "/v1/projects", admin, {"name": name})["id"]
        member = call(
            "POST", "/v1/users", admin, {"name": f"m-{name}", "password": PASSWORD + "-member"}
        )
        call("PUT", f"/v1/projects/{project}/users/{member['id']}/roles/member", admin)
        token = login(f"m-{name}", name)
        cost = 200_000 // checks
        document = worst_document(
            READ, CONTAINER, "env", max_cost=min(cost, 50_000), pattern=pattern
        )
        call("PUT", f"/v1/projects/{project}/policy", admin, document)
        body = {
            "checks": [
                worst_check(READ, CONTAINER, project, strings, i, length) for i in range(checks)
            ]
        }
        call("POST", "/v1/authorize/batch", token, body)  # warm: engine, boundary verdicts
        times, answers = [], collections.Counter()
        for _ in range(args.rounds):
            started = time.perf_counter()
            answer = call("POST", "/v1/authorize/batch", token, body)
            times.append((time.perf_counter() - started) * 1000)
            answers.update(
                r["decided_by"] + ("" if r["allowed"] else "-deny") for r in answer["results"]
            )
        times.sort()
        results[label] = {
            "rules": len(document["rules"]),
            "p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "max_ms": round(times[-1], 1),
            "answers": dict(answers),
        }
        print(f"{label}: {results[label]}", flush=True)


if __name__ == "__main__":
    main()
