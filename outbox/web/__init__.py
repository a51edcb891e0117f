"""``outbox web``: a dashboard over the views, with the operator's actions.

* `app` -- the Starlette application: routes, sign-in, headers;
* `auth` -- the sign-in token, sessions and CSRF tokens (pure);
* `pages` -- the pages (overview, endpoint, messages, a message, dead letters);
* `actions` -- what changes delivery (pause, resume, unblock, requeue, purge),
  each a POST with a CSRF token, refused with 403 to a role that may not;
* `data` -- what the pages read (``db/sql/web.sql`` and `outbox.operate`);
* ``templates/`` (Jinja2, autoescaped) and ``static/`` (htmx and uPlot from
  their npm packages, see ``static/LICENSES.md``; nothing fetched from outside).

Needs the ``web`` extra.
"""
