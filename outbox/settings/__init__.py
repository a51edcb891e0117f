"""Everything outbox can be configured with, and every default, declared once.

* `process`: the settings of a process (``OUTBOX_*`` environment variables,
  and the flags of ``outbox worker``), `Settings`;
* `endpoint`: the settings of an endpoint (``outbox endpoint add`` and
  ``update``), `SETTINGS`;
* `kinds` and `values`: how their values are parsed, checked, stored and shown.
"""

from outbox.settings.process import Settings, load_settings

__all__ = ["Settings", "load_settings"]
