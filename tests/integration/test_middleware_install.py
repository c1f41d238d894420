"""What a relying service gets from `pip install latchkey` (no extras): the wheel built
from this checkout, installed into a fresh virtualenv, gives a working middleware and
brings none of the server (docs/decisions.md, "One distribution, the server an extra").

The wheel and the virtualenv are built once for the module (about 20 s, from the
configured package index).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The distributions a relying service's `pip install latchkey` may bring, and no more:
# latchkey, what latchkey.wire and latchkey.middleware import, and their own needs.
KERNEL_DISTRIBUTIONS = {"latchkey", "joserfc", "cryptography", "cffi", "pycparser"}
SERVER_MODULES = ("flask", "sqlalchemy", "oso", "werkzeug", "flask_sqlalchemy", "authlib", "ldap3")

# Runs inside the fresh virtualenv; prints one JSON object.
PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys

    import latchkey.middleware
    from latchkey.middleware import LatchkeyMiddleware

    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "latchkey")
    server_loaded = sorted({"flask", "sqlalchemy", "oso"} & set(sys.modules))
    installed = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is not None]

    def service(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the service answered"]

    # Nothing listens on port 9: a request without a token needs no call to Latchkey.
    app = LatchkeyMiddleware(
        service,
        latchkey_url="http://127.0.0.1:9",
        service_type="objects",
        service_token="unused",
        require_token=True,
        timeout=0.5,
    )

    def call(headers):
        answer = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"] = status
            answer["headers"] = dict(response_headers)

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/objects", **headers}
        answer["body"] = b"".join(app(environ, start_response)).decode()
        return answer

    print(json.dumps({
        "latchkey_modules": loaded,
        "server_loaded": server_loaded,
        "server_installed": installed,
        "without_token": call({}),
        "with_garbage_token": call({"HTTP_AUTHORIZATION": "Bearer not.a.token"}),
    }))
    """
)


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def kernel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("middleware-install")
    wheels = work / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)]
    )
    if built.returncode != 0:
        if "No matching distribution" in built.stderr or "Could not find a version" in built.stderr:
            pytest.skip(f"cannot build the wheel offline: {built.stderr.strip()[-300:]}")
        pytest.fail(f"pip wheel failed:\n{built.stderr}")
    (wheel,) = wheels.glob("latchkey-*.whl")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return venv


def test_install_without_extras_brings_only_the_kernel(kernel_venv: Path) -> None:
    frozen = _run([str(kernel_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"])
    assert frozen.returncode == 0, frozen.stderr
    names = {entry["name"].lower() for entry in json.loads(frozen.stdout)}
    assert names - {"pip", "setuptools"} <= KERNEL_DISTRIBUTIONS


def test_middleware_loads_no_server_and_rejects_a_request_without_token(kernel_venv: Path) -> None:
    probe = f"SERVER_MODULES = {SERVER_MODULES!r}\n{PROBE}"
    ran = _run([str(kernel_venv / "bin" / "python"), "-c", probe], cwd=kernel_venv)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)

    assert seen["server_loaded"] == []
    assert seen["server_installed"] == []
    # Only the kernel: wire/, middleware/ and errors, whatever other modules latchkey grows.
    assert {m.split(".")[1] for m in seen["latchkey_modules"] if "." in m} == {
        "errors",
        "middleware",
        "wire",
    }
    without = seen["without_token"]
    assert without["status"].startswith("401 ")
    assert without["headers"]["Content-Type"] == "application/problem+json"
    assert json.loads(without["body"])["code"] == "token_missing"
    garbage = seen["with_garbage_token"]
    assert garbage["status"].startswith("401 ")
    assert json.loads(garbage["body"])["code"] == "invalid_token"


def test_the_command_names_the_server_extra(kernel_venv: Path) -> None:
    ran = _run([str(kernel_venv / "bin" / "latchkey"), "--help"])
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [
        "latchkey: the server's dependencies are not installed (click is missing); "
        "pip install 'latchkey[server]'"
    ]
