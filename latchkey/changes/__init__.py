"""Change signals: a generation counter each cache keys on, moved by the database
(PostgreSQL LISTEN/NOTIFY, SQLite's data_version)."""
