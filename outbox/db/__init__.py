"""The database: connections, migrations, the tables, named queries, and the
schema's current truth (``schema/``: every function, view and trigger)."""
