"""The SQLAlchemy ``MetaData`` every table of the ``outbox`` schema is described on
(`outbox.db.tables`, `outbox.db.topic_tables`)."""

from __future__ import annotations

from sqlalchemy import MetaData

SCHEMA = "outbox"

metadata = MetaData(schema=SCHEMA)
