// Node.js (node-postgres): the order and its notification in one transaction.
const { Client } = require("pg");

async function placeOrder(client, customer, total) {
  await client.query("BEGIN");
  try {
    const order = await client.query(
      "INSERT INTO orders (customer, total) VALUES ($1, $2) RETURNING id", [customer, total]);
    const id = order.rows[0].id;
    const message = await client.query(
      "SELECT outbox.enqueue($1, $2::jsonb, key => $3, idempotency_key => $4) AS id",
      ["orders-webhook", JSON.stringify({ event: "order.created", order_id: id }),
       `customer-${customer}`, `order-${id}`]);
    await client.query("COMMIT");
    return message.rows[0].id;
  } catch (err) {
    await client.query("ROLLBACK");  // the notification goes with the order
    throw err;
  }
}

async function main() {
  const client = new Client({ connectionString: process.env.OUTBOX_DATABASE_URL });
  await client.connect();
  try {
    console.log(await placeOrder(client, "grace", 99));
  } finally {
    await client.end();
  }
}

main().catch((err) => { console.error(err.message); process.exit(1); });
