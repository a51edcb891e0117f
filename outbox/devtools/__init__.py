"""Tools for developers, not for production: the demo, a fault-injecting HTTP
receiver, a fake Telegram Bot API, an embedded PostgreSQL, the benchmarks and
the soak run. They need the ``demo`` (or ``bench``) extra."""
