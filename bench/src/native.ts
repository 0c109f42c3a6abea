/**
 * Costs of the native layer's building blocks: `node bench/dist/native.js`
 * (after `npx tsc -b bench`). Options: `--round-trips N` (default 20000).
 *
 * What is measured:
 * - eventfd write: one `eventfdWrite(fd, 1)` (native write(2) of 8 bytes on a
 *   non-blocking eventfd), timed in batches of 1000 calls by tinybench and
 *   divided by 1000; `fs.writeSync` of an 8-byte Buffer on the same fd for
 *   comparison. The counter is drained after every batch.
 * - copyWithin: one `Uint8Array.copyWithin` of 64 B / 1500 B inside a
 *   SharedArrayBuffer from `mmap` of a memfd (guest-memory-like), batches of
 *   1000; the same on a plain ArrayBuffer for comparison.
 * - wake-up round trip worker -> main -> worker, timed in the worker with
 *   process.hrtime from just before its eventfd write to the moment it sees the
 *   answer; one sample per round trip, the first 1000 discarded as warm-up:
 *     (a) "poller both ways": worker writes eventfd A; the main thread's Poller
 *         on A (drainEventfd) wakes and writes eventfd B; the worker's Poller on
 *         B (drainEventfd) wakes: two uv_poll wake-ups, two callbacks into JS.
 *     (b) "poller + Atomics.notify": worker writes eventfd A and blocks in
 *         Atomics.wait on a word of a mapped SAB; the main thread's Poller on A
 *         wakes and does Atomics.add + Atomics.notify.
 *   Threads are not pinned (the machine's cores are shared); figures are medians
 *   on a noisy VM: compare ratios rather than absolutes.
 */
import { writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  POLL_READABLE,
  Poller,
  close,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  memfdCreate,
  mmap,
  release,
} from '@vhost-ts/native';
import { Bench } from 'tinybench';

type Mode = 'pollers' | 'atomics';
interface WorkerJob {
  mode: Mode;
  toMain: number; // eventfd the worker writes
  toWorker: number; // eventfd the main thread writes (mode 'pollers')
  sab: SharedArrayBuffer; // Atomics word 0 (mode 'atomics')
  count: number;
}

const BATCH = 1000;
const WARMUP_ROUND_TRIPS = 1000;

// ---------------------------------------------------------------------------
// Worker side of the round trips.

function workerMain(job: WorkerJob): void {
  const samples = new Float64Array(job.count);
  const total = job.count + WARMUP_ROUND_TRIPS;
  let i = 0;
  let t0 = 0n;
  const record = (): void => {
    const dt = Number(process.hrtime.bigint() - t0);
    if (i >= WARMUP_ROUND_TRIPS) samples[i - WARMUP_ROUND_TRIPS] = dt;
    i++;
  };
  const done = (): void => parentPort?.postMessage(samples, [samples.buffer]);

  if (job.mode === 'pollers') {
    const poller = new Poller(
      job.toWorker,
      () => {
        record();
        if (i === total) {
          poller.close();
          done();
          return;
        }
        t0 = process.hrtime.bigint();
        eventfdWrite(job.toMain, 1);
      },
      true,
    );
    poller.start(POLL_READABLE);
    t0 = process.hrtime.bigint();
    eventfdWrite(job.toMain, 1);
  } else {
    const word = new Int32Array(job.sab);
    while (i < total) {
      const seen = Atomics.load(word, 0);
      t0 = process.hrtime.bigint();
      eventfdWrite(job.toMain, 1);
      const r = Atomics.wait(word, 0, seen, 5000);
      if (r === 'timed-out') throw new Error('no answer from the main thread within 5 s');
      record();
    }
    done();
  }
}

// ---------------------------------------------------------------------------
// Main side.

interface Row {
  name: string;
  p50: number; // ns
  p99: number; // ns
  mean: number; // ns
  samples: number;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))] ?? NaN;
}

async function roundTrip(mode: Mode, count: number): Promise<Row> {
  const toMain = eventfdCreate();
  const toWorker = eventfdCreate();
  const memfd = memfdCreate('bench-atomics');
  ftruncate(memfd, 4096);
  const sab = mmap(memfd, 0, 4096);
  close(memfd);
  const word = new Int32Array(sab);
  const poller = new Poller(
    toMain,
    mode === 'pollers'
      ? () => {
          eventfdWrite(toWorker, 1);
        }
      : () => {
          Atomics.add(word, 0, 1);
          Atomics.notify(word, 0, 1);
        },
    true,
  );
  poller.start(POLL_READABLE);
  const job: WorkerJob = { mode, toMain, toWorker, sab, count };
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job });
  // Listen for 'exit' from the start: Node emits a worker's last message and
  // its 'exit' together, so a listener added after the message misses it.
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const samples = await new Promise<Float64Array>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await exited;
  poller.close();
  release(sab);
  close(toMain);
  close(toWorker);
  samples.sort();
  let sum = 0;
  for (const s of samples) sum += s;
  const name =
    mode === 'pollers'
      ? 'wake-up round trip worker->main->worker (Poller both ways)'
      : 'wake-up round trip worker->main->worker (Poller, Atomics.notify back)';
  return { name, p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), mean: sum / samples.length, samples: samples.length };
}

async function microBenchmarks(): Promise<Row[]> {
  const efd = eventfdCreate();
  const eight = Buffer.alloc(8);
  eight.writeBigUInt64LE(1n);
  const memfd = memfdCreate('bench-copy');
  ftruncate(memfd, 1 << 20);
  const mapped = new Uint8Array(mmap(memfd, 0, 1 << 20));
  close(memfd);
  mapped.fill(7);
  const plain = new Uint8Array(1 << 20).fill(7);

  const bench = new Bench({ name: 'native', time: 400, timestampProvider: 'hrtimeNow' });
  bench
    .add('eventfd write 8 B (native eventfdWrite)', () => {
      for (let k = 0; k < BATCH; k++) eventfdWrite(efd, 1);
      eventfdRead(efd);
    })
    .add('eventfd write 8 B (fs.writeSync, for comparison)', () => {
      for (let k = 0; k < BATCH; k++) writeSync(efd, eight);
      eventfdRead(efd);
    })
    .add('copyWithin 64 B on a mapped SAB', () => {
      for (let k = 0; k < BATCH; k++) mapped.copyWithin(8192, 0, 64);
    })
    .add('copyWithin 1500 B on a mapped SAB', () => {
      for (let k = 0; k < BATCH; k++) mapped.copyWithin(8192, 0, 1500);
    })
    .add('copyWithin 64 B on a plain ArrayBuffer', () => {
      for (let k = 0; k < BATCH; k++) plain.copyWithin(8192, 0, 64);
    })
    .add('copyWithin 1500 B on a plain ArrayBuffer', () => {
      for (let k = 0; k < BATCH; k++) plain.copyWithin(8192, 0, 1500);
    });
  await bench.run();
  release(mapped.buffer as SharedArrayBuffer);
  close(efd);

  const rows: Row[] = [];
  for (const task of bench.tasks) {
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
    // Latencies are in ms per batch of BATCH calls: report ns per call.
    const perCall = (ms: number): number => (ms * 1e6) / BATCH;
    rows.push({
      name: `${task.name} [batches of ${BATCH}]`,
      p50: perCall(r.latency.p50),
      p99: perCall(r.latency.p99),
      mean: perCall(r.latency.mean),
      samples: r.latency.samplesCount * BATCH,
    });
  }
  return rows;
}

function format(ns: number): string {
  return ns >= 1000 ? `${(ns / 1000).toFixed(2)} us` : `${ns.toFixed(1)} ns`;
}

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--round-trips');
  const count = arg > 0 ? Number(process.argv[arg + 1]) : 20_000;
  if (!Number.isInteger(count) || count < 100) throw new Error('--round-trips wants an integer >= 100');
  const rows = await microBenchmarks();
  rows.push(await roundTrip('pollers', count));
  rows.push(await roundTrip('atomics', count));
  console.log(`native layer: node ${process.version}, ${availableParallelism()} CPUs, threads not pinned`);
  console.log(`(rows in batches of ${BATCH}: p50/p99 are over the per-call means of each batch)`);
  const width = Math.max(...rows.map((r) => r.name.length));
  console.log(`${'operation'.padEnd(width)}  ${'p50'.padStart(10)}  ${'p99'.padStart(10)}  ${'mean'.padStart(10)}  ${'samples'.padStart(9)}`);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(width)}  ${format(r.p50).padStart(10)}  ${format(r.p99).padStart(10)}  ${format(r.mean).padStart(10)}  ${String(r.samples).padStart(9)}`,
    );
  }
}

if (isMainThread) {
  await main();
} else {
  workerMain(workerData as WorkerJob);
}
