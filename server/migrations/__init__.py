"""Alembic migrations of the market database (run by `lmdock.server.db.migrate`)."""
