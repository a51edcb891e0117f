// graphile-worker peer (see README.md and peer_common.mjs for the protocol).
//
// Settings (JSON):
//   concurrency            concurrentJobs                     [10]
//   localQueueSize         localQueue.size; -1: no local queue [-1]
//   completeJobBatchDelay  ms; -1: complete each job alone    [-1]
//   failJobBatchDelay      ms; -1: fail each job alone        [-1]
//   maxPoolSize            pg pool size              [concurrency + 2, at least 10]
//   pollInterval           ms (jobs are found by LISTEN/NOTIFY and the pool's
//                          own refetch; polling only backs that up)   [2000]
//   chunk                  jobs per addJobs() call when enqueueing     [10000]
//
// Graphile logs every completed job at info level; the logger here keeps only
// warnings and errors (on stderr), so that no engine pays for per-job output.

import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { Recorder, args, chunks, drainedAt, emit, now } from "./peer_common.mjs";

const { mode, url, n, settings } = args();

const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile ${level}] ${message}`);
});

if (mode === "enqueue") {
  const t0 = now();
  const utils = await makeWorkerUtils({ connectionString: url, logger });
  try {
    await utils.migrate();
    for (const ids of chunks(n, settings.chunk ?? 10_000)) {
      await utils.addJobs(ids.map((i) => ({ identifier: "bench", payload: { i } })));
    }
  } finally {
    await utils.release();
  }
  emit({ enqueued: n, seconds: now() - t0 });
  process.exit(0);
}

const concurrency = settings.concurrency ?? 10;
const worker = {
  connectionString: url,
  logger,
  concurrentJobs: concurrency,
  maxPoolSize: settings.maxPoolSize ?? Math.max(10, concurrency + 2),
  pollInterval: settings.pollInterval ?? 2000,
};
if ((settings.localQueueSize ?? -1) > 0) worker.localQueue = { size: settings.localQueueSize };
if (settings.completeJobBatchDelay != null) worker.completeJobBatchDelay = settings.completeJobBatchDelay;
if (settings.failJobBatchDelay != null) worker.failJobBatchDelay = settings.failJobBatchDelay;

const rec = new Recorder(n);
const started = now();
const runner = await run({
  noHandleSignals: true,
  taskList: {
    bench: async (_payload, helpers) => {
      rec.record(helpers.job.id);
    },
  },
  preset: { worker },
});
runner.promise.catch((err) => {
  console.error(err);
  process.exit(1);
});

await rec.done;
const drained = await drainedAt(url, "SELECT count(*) FROM graphile_worker._private_jobs");
emit(rec.result({ drained, started }));
await Promise.race([runner.stop(), new Promise((r) => setTimeout(r, 5000))]);
process.exit(0);
