-- What producers run: outbox.enqueue() and outbox.enqueue_many(), outbox.publish() and
-- outbox.publish_many(), from asyncpg and from SQLAlchemy. Statements ending in `_named` use SQLAlchemy's :name style; the
-- others asyncpg's $n style.
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

-- enqueue --
-- Insert one message in the caller's transaction: $1 endpoint, $2 payload (JSON text), $3 key, $4 idempotency key, $5 priority, $6 deliver_at, $7 headers (JSON text), $8 traceparent, $9 tracestate.
-- Payload and headers travel as text and are cast here, so a jsonb codec the caller installed on their connection cannot double-encode them.
SELECT outbox.enqueue($1, $2::text::jsonb, $3, $4, $5, $6, $7::text::jsonb, $8, $9);

-- enqueue_named --
-- The same for SQLAlchemy sessions and connections (sync and async).
SELECT outbox.enqueue(CAST(:endpoint AS text), CAST(CAST(:payload AS text) AS jsonb), CAST(:key AS text), CAST(:idempotency_key AS text), CAST(:priority AS integer), CAST(:deliver_at AS timestamptz), CAST(CAST(:headers AS text) AS jsonb), CAST(:traceparent AS text), CAST(:tracestate AS text));

-- enqueue_many --
-- Insert many messages in one round trip: parallel arrays $1 endpoints, $2 payloads (JSON text), $3 keys, $4 idempotency keys, $5 priorities, $6 deliver_ats, $7 headers (JSON text), $8 traceparents, $9 tracestates; NULL arrays mean defaults.
SELECT outbox.enqueue_many($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[], $7::text[]::jsonb[], $8::text[], $9::text[]);

-- enqueue_many_named --
-- The same for SQLAlchemy.
SELECT outbox.enqueue_many(CAST(:endpoints AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:keys AS text[]), CAST(:idempotency_keys AS text[]), CAST(:priorities AS integer[]), CAST(:deliver_ats AS timestamptz[]), CAST(CAST(:headers AS text[]) AS jsonb[]), CAST(:traceparents AS text[]), CAST(:tracestates AS text[]));

-- publish --
-- Publish one event in the caller's transaction: $1 topic, $2 payload (JSON text), $3 key, $4 idempotency key, $5 priority, $6 deliver_at, $7 headers (JSON text), $8 traceparent, $9 tracestate. Returns the ids made, one per subscribed endpoint.
SELECT outbox.publish($1, $2::text::jsonb, $3, $4, $5, $6, $7::text::jsonb, $8, $9);

-- publish_named --
-- The same for SQLAlchemy sessions and connections (sync and async).
SELECT outbox.publish(CAST(:topic AS text), CAST(CAST(:payload AS text) AS jsonb), CAST(:key AS text), CAST(:idempotency_key AS text), CAST(:priority AS integer), CAST(:deliver_at AS timestamptz), CAST(CAST(:headers AS text) AS jsonb), CAST(:traceparent AS text), CAST(:tracestate AS text));

-- publish_many --
-- Publish many events in one round trip: parallel arrays $1 topics, $2 payloads (JSON text), $3 keys, $4 idempotency keys, $5 priorities, $6 deliver_ats, $7 headers (JSON text), $8 traceparents, $9 tracestates; NULL arrays mean defaults. One row per event: its index and its ids.
SELECT i, message_ids FROM outbox.publish_many($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[], $7::text[]::jsonb[], $8::text[], $9::text[]);

-- publish_many_named --
-- The same for SQLAlchemy.
SELECT i, message_ids FROM outbox.publish_many(CAST(:topics AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:keys AS text[]), CAST(:idempotency_keys AS text[]), CAST(:priorities AS integer[]), CAST(:deliver_ats AS timestamptz[]), CAST(CAST(:headers AS text[]) AS jsonb[]), CAST(:traceparents AS text[]), CAST(:tracestates AS text[]));
