"""The HTTP layer: validation, serialisation, status codes. Never the database."""
