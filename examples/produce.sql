-- From any language: call outbox.enqueue() inside your own transaction.
BEGIN;
INSERT INTO orders (customer, total) VALUES ('dee', 42);
SELECT outbox.enqueue(
    endpoint        => 'orders-webhook',
    payload         => jsonb_build_object('event', 'order.created', 'total', 42),
    key             => 'customer-dee',
    idempotency_key => 'order-dee-1'
);
COMMIT;
