"""Operations: health, readiness, metrics, the audit trail's API."""
