"""Schemathesis against Latchkey's own OpenAPI document: no generated input is a 5xx.

Every operation of ``/v1/openapi.json`` gets schemathesis' three phases, as its
pytest plugin would run them: the document's examples, the coverage phase
(boundary values: empty strings, numbers just past each range, missing and
extra fields, wrong types) and fuzzing (valid and invalid requests). Each is
sent with the bootstrap admin's project-scoped token to the app on SQLite, and
the answer is judged by ``not_a_server_error`` and, since issue 15 (point 3), by
the document itself: the status is one it lists for the operation, the media type
and the body match the response it describes, and its required headers are there
(``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``, ``response_headers_conformance``).

Bounded for CI: a few fuzzing examples per operation, no deadline,
derandomised when ``CI`` is set so a run is repeatable. Set
``LATCHKEY_SCHEMATHESIS_EXAMPLES`` to look harder locally.

schemathesis' ``schema.parametrize`` does not run under pytest 9 (it rewrites a
private node attribute), so this test builds the same per-operation Hypothesis
tests (``get_all_tests``, what the plugin runs) and runs them one by one.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_PASSWORD, _app_for, password_auth, reset_database

MAX_EXAMPLES = int(os.environ.get("LATCHKEY_SCHEMATHESIS_EXAMPLES", "10"))
BACKEND = os.environ.get("LATCHKEY_SCHEMATHESIS_BACKEND", "sqlite")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _admin_headers(app: Flask) -> dict[str, str]:
    body = password_auth("admin", ADMIN_PASSWORD, project="admin")
    response = app.test_client().post("/v1/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return {"Authorization": "Bearer " + response.get_json()["token"]}


@pytest.fixture
def target_app(
    request: pytest.FixtureRequest, apps: dict[str, Flask], tmp_path_factory: pytest.TempPathFactory
) -> Flask:
    """SQLite in the suite; ``LATCHKEY_SCHEMATHESIS_BACKEND=postgres`` for a local look."""
    return _app_for(BACKEND, apps, request, tmp_path_factory)


def test_no_generated_input_is_a_server_error_and_every_answer_is_documented(
    target_app: Flask,
) -> None:
    app = target_app
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    schema.validate()  # the document itself is valid OpenAPI 3.0.3
    headers: dict[str, str] = {}
    cases = 0
    statuses: Counter[int] = Counter()

    def call(case: Any) -> None:
        nonlocal cases
        cases += 1
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses[response.status_code] += 1

    bounds = settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=IN_CI,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    failures: list[str] = []
    operations = 0
    started = time.monotonic()
    for result in get_all_tests(schema=schema, test_func=call, settings=bounds, given_kwargs={}):
        operation, test = result.ok()
        operations += 1
        # Each operation starts from the bootstrap state with a fresh token: an earlier
        # one may have deleted the admin role (which revokes the token) or a domain.
        reset_database(app)
        headers.update(_admin_headers(app))
        try:
            test()
        except Unsatisfiable:
            pass  # nothing in this operation can be made invalid (no parameters, no body)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
            failures.append(f"{operation.label}: {exc}"[:2000])
    elapsed = time.monotonic() - started
    print(f"schemathesis: {operations} operations, {cases} cases in {elapsed:.1f} s: {statuses}")
    assert operations >= 50
    # The token stayed good: few answers are 401 (a case that deletes the admin role
    # leaves the rest of its operation testing nothing but authentication).
    assert statuses[401] < cases / 20, statuses
    assert not failures, "\n\n".join(failures)
