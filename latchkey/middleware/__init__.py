"""What relying services install to validate Latchkey tokens (see docs/middleware.md)."""
