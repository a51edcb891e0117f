// What the Node peers' worker scripts share (see README.md): the command line,
// the clock, the recorder of handler start times, and the final JSON line.
//
//   node <peer>.mjs enqueue URL N [SETTINGS_JSON]   create the schema, add N jobs in bulk
//   node <peer>.mjs work    URL N [SETTINGS_JSON]   drain them; print one JSON line, exit
//
// Settings come as one JSON object (argv[5], or the PEER_SETTINGS environment
// variable); each script documents its keys.

import pg from "pg";

/** Wall-clock time in seconds since the epoch, sub-millisecond. */
export function now() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

export function args() {
  const [mode, url, n, raw] = process.argv.slice(2);
  if (!["enqueue", "work"].includes(mode) || !url || !(Number(n) > 0)) {
    console.error("usage: node <peer>.mjs enqueue|work URL N [SETTINGS_JSON]");
    process.exit(2);
  }
  const settings = JSON.parse(raw ?? process.env.PEER_SETTINGS ?? "{}");
  return { mode, url, n: Number(n), settings };
}

export function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/**
 * Records each handler's start: the first and last start, how many distinct
 * jobs started and how many calls there were (a job run twice shows as
 * calls > count). `done` resolves once n distinct jobs have started.
 */
export class Recorder {
  constructor(n) {
    this.n = n;
    this.first = null;
    this.last = null;
    this.calls = 0;
    this.seen = new Set();
    this.done = new Promise((resolve) => {
      this._resolve = resolve;
    });
  }

  record(id, t = now()) {
    if (this.first === null) this.first = t;
    this.last = t;
    this.calls += 1;
    this.seen.add(String(id));
    if (this.seen.size === this.n) this._resolve();
  }

  result(extra = {}) {
    return {
      count: this.seen.size,
      calls: this.calls,
      first: this.first,
      last: this.last,
      ...extra,
    };
  }
}

/**
 * After the last start: poll `sql` (a count of jobs not yet completed) every
 * 10 ms until it is 0; the time it first was. Outside the measured window.
 */
export async function drainedAt(url, sql, timeoutSeconds = 60) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const deadline = now() + timeoutSeconds;
    for (;;) {
      const { rows } = await client.query(sql);
      if (Number(rows[0].count) === 0) return now();
      if (now() > deadline) return null;
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await client.end();
  }
}

/** Chunks [0, n) into arrays of at most `size` indexes. */
export function* chunks(n, size) {
  for (let start = 0; start < n; start += size) {
    const end = Math.min(n, start + size);
    yield Array.from({ length: end - start }, (_, k) => start + k);
  }
}
