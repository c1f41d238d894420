"""Schemathesis against Latchkey's own OpenAPI document: no generated input is a 5xx.

Every operation of ``/v1/openapi.json`` gets generated requests, valid ones and
invalid ones (wrong types, missing and extra fields, out-of-range numbers,
awkward strings), sent with the bootstrap admin's project-scoped token to the
app on SQLite, and schemathesis' ``not_a_server_error`` check judges each answer.

Bounded for CI: a few examples per operation and generation mode, no deadline,
derandomised when ``CI`` is set so a run is repeatable. Set
``LATCHKEY_SCHEMATHESIS_EXAMPLES`` to look harder locally.

schemathesis' own pytest integration (``schema.parametrize``) does not run under
pytest 9 (it rewrites a private node attribute), so the operations are walked
here with schemathesis' strategies and Hypothesis' ``given``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import ADMIN_PASSWORD, password_auth

MAX_EXAMPLES = int(os.environ.get("LATCHKEY_SCHEMATHESIS_EXAMPLES", "10"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _admin_headers(app: Flask) -> dict[str, str]:
    body = password_auth("admin", ADMIN_PASSWORD, project="admin")
    response = app.test_client().post("/v1/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return {"Authorization": "Bearer " + response.get_json()["token"]}


def test_no_generated_input_is_a_server_error(sqlite_app: Flask) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", sqlite_app)
    schema.validate()  # the document itself is valid OpenAPI 3.0.3
    headers = _admin_headers(sqlite_app)
    failures: list[str] = []
    cases = 0
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=IN_CI,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                nonlocal cases
                cases += 1
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (no parameters, no body)
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    elapsed = time.monotonic() - started
    print(f"schemathesis: {operations} operations, {cases} cases in {elapsed:.1f} s")
    assert operations >= 50
    assert not failures, "\n\n".join(failures)
