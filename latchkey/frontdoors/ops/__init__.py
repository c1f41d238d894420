"""Operations over HTTP: health, readiness, metrics, the audit trail's API."""
