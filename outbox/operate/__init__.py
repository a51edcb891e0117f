"""Operating outbox: endpoints, the shared config and alerts, dead letters,
one message's story, the stats, and the roles.

Thin async functions over an asyncpg connection; the CLI calls these, and so
can applications and the dashboard. Long operations work in batches (short
transactions, no long locks) and report progress through a callback.
"""

from outbox.operate.config import OutboxConfig, get_config, set_alerts, set_config
from outbox.operate.dead import (
    BATCH,
    DeadLetter,
    count_dead,
    dead_letters,
    purge,
    requeue,
)
from outbox.operate.endpoints import (
    EndpointInfo,
    add_endpoint,
    list_endpoints,
    pause_endpoint,
    remove_endpoint,
    resume_endpoint,
    unblock_key,
    update_endpoint,
)
from outbox.operate.messages import MessageStory, message_story
from outbox.operate.roles import ROLES, apply_roles
from outbox.operate.stats import stats

__all__ = [
    "BATCH",
    "ROLES",
    "DeadLetter",
    "EndpointInfo",
    "MessageStory",
    "OutboxConfig",
    "add_endpoint",
    "apply_roles",
    "count_dead",
    "dead_letters",
    "get_config",
    "list_endpoints",
    "message_story",
    "pause_endpoint",
    "purge",
    "remove_endpoint",
    "requeue",
    "resume_endpoint",
    "set_alerts",
    "set_config",
    "stats",
    "unblock_key",
    "update_endpoint",
]
