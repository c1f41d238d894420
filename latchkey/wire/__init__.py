"""What Latchkey and the relying services' ``latchkey.middleware`` share on the wire.

Pure modules: no Flask, no SQLAlchemy, so that ``latchkey.middleware`` imports them
without the service's dependencies.
"""
