-- The receiver's inbox: one row per webhook it has acted on, written in the
-- same transaction as the effect (outbox.receive.first_delivery). Apply it to
-- the receiver's own database, by hand or from its migrations.
CREATE TABLE IF NOT EXISTS outbox_inbox (
    webhook_id  text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Rows arrive in time order: a BRIN index finds old ones for pruning at
-- almost no cost to each insert.
CREATE INDEX IF NOT EXISTS outbox_inbox_received_at
    ON outbox_inbox USING brin (received_at);
