"""``latchkey.middleware``: verify Latchkey tokens in any WSGI service (docs/middleware.md)."""

from latchkey.middleware.wsgi import (
    IDENTITY_KEY,
    MIDDLEWARE_KEY,
    Identity,
    LatchkeyMiddleware,
    authorize,
    bearer_token,
    current_identity,
)

__all__ = [
    "IDENTITY_KEY",
    "MIDDLEWARE_KEY",
    "Identity",
    "LatchkeyMiddleware",
    "authorize",
    "bearer_token",
    "current_identity",
]
