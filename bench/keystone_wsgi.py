"""Keystone's WSGI app for gunicorn, in bench/.venv-keystone (not Latchkey's virtualenv).

oslo.config would parse gunicorn's argv and fail: clear it first. The config file
comes from OS_KEYSTONE_CONFIG_FILES (set by bench/keystone_side.py).
"""

import sys

sys.argv = sys.argv[:1]

from keystone.common.sql import core  # noqa: E402
from keystone.server.wsgi import initialize_public_application  # noqa: E402

core.enable_sqlite_foreign_key()  # SQLite: deletes must cascade (REFERENCE.md)
application = initialize_public_application()
