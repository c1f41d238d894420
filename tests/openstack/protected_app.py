"""A tiny OpenStack-style service behind keystonemiddleware's ``auth_token``.

Runs in ``.venv-openstack`` (scripts/openstack-clients.sh), never in Latchkey's
own environment::

    python tests/openstack/protected_app.py CONFIG_FILE

CONFIG_FILE is an ordinary service configuration file whose
``[keystone_authtoken]`` section points at Latchkey (docs/integrating.md shows
the one the tests write). The server listens on 127.0.0.1 on a free port and
prints ``listening <port>`` once it is ready. Every request that gets past the
middleware is answered 200 with the identity keystonemiddleware hands over.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from keystonemiddleware import auth_token
from oslo_config import cfg

IDENTITY_HEADERS = {
    "identity_status": "HTTP_X_IDENTITY_STATUS",
    "user_id": "HTTP_X_USER_ID",
    "user_name": "HTTP_X_USER_NAME",
    "user_domain_id": "HTTP_X_USER_DOMAIN_ID",
    "project_id": "HTTP_X_PROJECT_ID",
    "project_name": "HTTP_X_PROJECT_NAME",
    "roles": "HTTP_X_ROLES",
}


def service(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    body = {name: environ.get(key) for name, key in IDENTITY_HEADERS.items()}
    body["method"] = environ["REQUEST_METHOD"]
    body["path"] = environ.get("PATH_INFO", "")
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(config_file: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    conf = cfg.ConfigOpts()
    conf(args=[], project="protected-app", default_config_files=[config_file])
    app = auth_token.AuthProtocol(service, {"oslo_config_config": conf})
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
