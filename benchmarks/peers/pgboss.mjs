// pg-boss peer (see README.md and peer_common.mjs for the protocol).
//
// Settings (JSON):
//   batchSize               jobs per fetch; the handler gets them as one array [1000]
//   localConcurrency        workers polling the queue in this process         [4]
//   burstWhenBatchFull      fetch again at once after a full batch, instead of
//                           waiting pollingIntervalSeconds                     [true]
//   pollingIntervalSeconds  the wait between fetches otherwise (>= 0.5)       [0.5]
//   max                     pg pool size                  [localConcurrency + 6, at least 10]
//   partition               the queue in a table of its own                   [false]
//   chunk                   jobs per insert() call when enqueueing            [10000]
//
// A batch handler's jobs all start when the handler is called: each is recorded
// with that time. pg-boss completes the whole batch when the handler returns.

import { PgBoss } from "pg-boss";
import { Recorder, args, chunks, drainedAt, emit, now } from "./peer_common.mjs";

const { mode, url, n, settings } = args();
const QUEUE = "bench";

function boss(extra = {}) {
  const b = new PgBoss({ connectionString: url, schedule: false, ...extra });
  b.on("error", (err) => console.error(`[pg-boss error] ${err?.stack ?? err}`));
  return b;
}

if (mode === "enqueue") {
  const t0 = now();
  const b = boss({ supervise: false });
  await b.start();
  await b.createQueue(QUEUE, { partition: settings.partition ?? false });
  for (const ids of chunks(n, settings.chunk ?? 10_000)) {
    await b.insert(
      QUEUE,
      ids.map((i) => ({ data: { i } })),
    );
  }
  await b.stop({ graceful: false, close: true });
  emit({ enqueued: n, seconds: now() - t0 });
  process.exit(0);
}

const localConcurrency = settings.localConcurrency ?? 4;
const b = boss({ max: settings.max ?? Math.max(10, localConcurrency + 6) });
const rec = new Recorder(n);
const started = now();
await b.start();
await b.work(
  QUEUE,
  {
    batchSize: settings.batchSize ?? 1000,
    localConcurrency,
    burstWhenBatchFull: settings.burstWhenBatchFull ?? true,
    pollingIntervalSeconds: settings.pollingIntervalSeconds ?? 0.5,
  },
  async (jobs) => {
    const t = now();
    for (const job of jobs) rec.record(job.id, t);
  },
);

await rec.done;
const drained = await drainedAt(
  url,
  `SELECT count(*) FROM pgboss.job WHERE name = '${QUEUE}' AND state < 'completed'`,
);
emit(rec.result({ drained, started }));
await Promise.race([b.stop({ graceful: false }), new Promise((r) => setTimeout(r, 5000))]);
process.exit(0);
