"""A real Barbican 23.0.0 for the tests, from its own virtual environment.

``scripts/barbican.sh`` installs it into ``.venv-barbican`` (``make services``
runs it; the fixture runs it too, so a bare ``pytest`` on a clean clone works:
it takes about half a minute once). Each ``BarbicanServer`` writes a
configuration into a temporary HOME (``$HOME/.barbican/barbican.conf``, where
oslo.config looks): SQLite, the ``simple_crypto`` plugin with a fresh Fernet
KEK, no queue, ``db_auto_create``. It serves Barbican's paste application on
127.0.0.1 with ``wsgiref`` in a subprocess, without Keystone: the stock
``context`` filter trusts ``X-Identity-Status``/``X-Project-Id``/``X-User-Id``/
``X-Roles`` (``barbican_auth=trusted-headers``). Given a ``KeystoneAuth``, it
puts keystonemiddleware's ``auth_token`` in front instead, configured against a
Keystone (in the tests: a served Latchkey), as a production Barbican runs. The
SQLite file survives ``stop()``/``start()``, so outage tests can bring the same
store back.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LATCHKEY_BARBICAN_VENV", ROOT / ".venv-barbican"))
INSTALL = ROOT / "scripts" / "barbican.sh"
PROJECT = "latchkey-barbican-tests"  # the Barbican project Latchkey's payloads live in
# Latchkey accepts payloads of 64 KiB; Barbican's defaults (20,000 bytes of base64,
# 25,000-byte requests) are lower, so the test server, like a real deployment, raises them.
MAX_SECRET_BYTES = 131_072
MAX_REQUEST_BYTES = 262_144

PASTE_INI = """\
[composite:main]
use = egg:Paste#urlmap
/: barbican_version
/v1: barbican_api

[pipeline:barbican_version]
pipeline = request_id versionapp

[pipeline:barbican_api]
pipeline = request_id http_proxy_to_wsgi {authtoken}context microversion apiapp

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory

[app:apiapp]
paste.app_factory = barbican.api.app:create_main_app

[app:versionapp]
paste.app_factory = barbican.api.app:create_version_app

[filter:context]
paste.filter_factory = barbican.api.middleware.context:ContextMiddleware.factory

[filter:microversion]
paste.filter_factory = barbican.api.middleware.microversion:MicroversionMiddleware.factory

[filter:request_id]
paste.filter_factory = oslo_middleware.request_id:RequestId.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory
"""

# keystonemiddleware's section when Barbican trusts a Keystone (the cache off: a
# revoked token shows at once).
AUTHTOKEN_CONFIG = """
[keystone_authtoken]
www_authenticate_uri = {url}/v3
auth_url = {url}/v3
auth_type = password
username = {username}
password = {password}
user_domain_id = default
project_name = {project}
project_domain_id = default
interface = public
service_type = key-manager
token_cache_time = -1
"""


@dataclass(frozen=True)
class KeystoneAuth:
    """The Keystone Barbican validates tokens with, and its service account there."""

    url: str
    username: str
    password: str
    project: str = "service"


# Runs in .venv-barbican: stdlib and Barbican only.
RUNNER = textwrap.dedent(
    """
    import sys
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from paste.deploy import loadapp

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    sys.argv = sys.argv[:1]  # oslo.config must not parse the runner's arguments
    app = loadapp("config:" + PASTE_FILE)
    server = make_server("127.0.0.1", PORT, app, handler_class=QuietHandler)
    print("barbican listening", flush=True)
    server.serve_forever()
    """
)


def ensure_installed() -> Path:
    """The Barbican virtual environment's python, installing it when missing."""
    python = VENV / "bin" / "python"
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(INSTALL)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "LATCHKEY_BARBICAN_VENV": str(VENV), "PYTHON": _base_python()},
        check=False,
    )
    if result.returncode != 0 or not python.exists():
        pytest.fail(f"scripts/barbican.sh failed:\n{result.stdout}\n{result.stderr}")
    return python


def _base_python() -> str:
    # The interpreter the Latchkey venv was made from (3.11/3.12), not its venv wrapper.
    return os.environ.get("PYTHON") or str(Path(sys.base_prefix) / "bin" / "python3")


class BarbicanServer:
    """One Barbican API process on a free loopback port; its SQLite file outlives restarts."""

    def __init__(self, workdir: Path, python: Path, keystone: KeystoneAuth | None = None) -> None:
        self.workdir = workdir
        self.python = python
        self.keystone = keystone
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._configure()

    def _configure(self) -> None:
        conf_dir = self.workdir / ".barbican"
        conf_dir.mkdir(parents=True, exist_ok=True)
        kek = base64.urlsafe_b64encode(os.urandom(32)).decode()  # a Fernet key
        (conf_dir / "barbican.conf").write_text(
            textwrap.dedent(
                f"""\
                [DEFAULT]
                host_href = {self.url}
                db_auto_create = True
                max_allowed_secret_in_bytes = {MAX_SECRET_BYTES}
                max_allowed_request_size_in_bytes = {MAX_REQUEST_BYTES}
                log_file = {self.workdir / "barbican.log"}

                [database]
                connection = sqlite:///{self.workdir / "barbican.sqlite"}

                [queue]
                enable = False

                [secretstore]
                enabled_secretstore_plugins = store_crypto

                [crypto]
                enabled_crypto_plugins = simple_crypto

                [simple_crypto_plugin]
                kek = {kek}
                """
            )
            + (
                AUTHTOKEN_CONFIG.format(
                    url=self.keystone.url,
                    username=self.keystone.username,
                    password=self.keystone.password,
                    project=self.keystone.project,
                )
                if self.keystone
                else ""
            )
        )
        paste = PASTE_INI.format(authtoken="authtoken " if self.keystone else "")
        (conf_dir / "barbican-api-paste.ini").write_text(paste)

    def start(self) -> None:
        paste = self.workdir / ".barbican" / "barbican-api-paste.ini"
        code = f"PASTE_FILE = {str(paste)!r}\nPORT = {self.port}\n" + RUNNER
        output = (self.workdir / "barbican-stdout.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.python), "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={"HOME": str(self.workdir), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"barbican exited with {self.process.returncode}; see {output.name}\n"
                    + (self.workdir / "barbican-stdout.log").read_text()[-3000:]
                )
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"barbican did not become ready at {self.url}; see {output.name}")

    def ready(self) -> bool:
        # The versions document: served once the whole paste app (database included) loaded.
        try:
            answer = requests.get(self.url + "/", timeout=2)
        except requests.RequestException:
            return False
        return answer.status_code in (200, 300)

    def headers(self, project: str = PROJECT) -> dict[str, str]:
        """What a trusted proxy in front of Barbican would send for Latchkey."""
        return {
            "X-Identity-Status": "Confirmed",
            "X-Project-Id": project,
            "X-User-Id": "latchkey",
            "X-Roles": "member,reader",
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def barbican_python() -> Path:
    return ensure_installed()


@pytest.fixture(scope="session")
def barbican(
    barbican_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BarbicanServer]:
    server = BarbicanServer(tmp_path_factory.mktemp("barbican"), barbican_python)
    server.start()
    yield server
    server.stop()
