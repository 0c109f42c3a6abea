/**
 * How should `vhost-ts blk` complete I/O off the poller? Measures the two
 * modes the request module implements, end to end through the real stack
 * (front-end -> vhost-user socket -> queue worker -> backing file):
 * - `--io=sync`: fs.readSync/writeSync on the queue worker thread, straight
 *   into/out of guest memory;
 * - `--io=async`: fs.read/write on the libuv threadpool, worker in event-loop
 *   mode, many requests per queue in flight.
 *
 *   node bench/dist/blk-io.js [--seconds=3] [--rounds=3] [--span-mib=256]
 *
 * The back-end runs pinned to CPU 1 (taskset: its main thread, queue worker
 * and threadpool), the polling driver to CPU 0. Both back-ends run at once and every
 * workload alternates between them (order flipped every round); the table shows medians. The backing file lives in os.tmpdir() (page cache).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '@vhost-ts/native';
import { WORKLOADS, benchArgs, createFilledFile, MiB, openBenchDevice, printTable, runWorkload, startVhostTs, type Result, type Backend, type BenchDevice } from './blk-common.js';

const a = benchArgs(process.argv.slice(2));
const seconds = Number(a.seconds ?? 3);
const rounds = Number(a.rounds ?? 3);
const span = Number(a['span-mib'] ?? 256) * MiB;

const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-blk-io-'));
const file = path.join(dir, 'disk.img');
const results: Result[] = [];
try {
  native.setAffinity([0]);
  createFilledFile(file, span);
  const modes = [
    { name: 'io=sync', args: ['--io=sync'] },
    { name: 'io=async', args: ['--io=async'] },
  ];
  const workloads = [WORKLOADS.randread4k!, WORKLOADS.randwrite4k!, WORKLOADS.randread4kqd1!, WORKLOADS.seqread1m!, WORKLOADS.seqwrite1m!];
  // Both back-ends run at once (the idle one sleeps); every workload alternates between them,
  // so each A/B pair is measured seconds apart on this noisy shared machine.
  const bes: Backend[] = [];
  const devs: BenchDevice[] = [];
  try {
    for (const m of modes) {
      const be = await startVhostTs(dir, file, m.args, '1', m.name);
      bes.push(be);
      devs.push(await openBenchDevice(be.sock));
    }
    for (let r = 0; r < rounds; r++) {
      for (const w of workloads) {
        const order = r % 2 === 0 ? [0, 1] : [1, 0];
        for (const i of order) {
          const res = await runWorkload(devs[i]!, bes[i]!.name, w, seconds, span, bes[i]!.proc.pid);
          if (res.errors > 0) throw new Error(`${bes[i]!.name} ${w.name}: ${res.errors} requests failed`);
          results.push(res);
          console.log(JSON.stringify({ round: r, ...res }));
        }
      }
    }
  } finally {
    for (const d of devs) await d.dev.close();
    for (const be of bes) await be.proc.close();
  }
  console.log(`\nvhost-ts blk I/O modes, medians of ${rounds} interleaved rounds of ${seconds} s (4k: IOPS, 1m: MB/s; median [min..max])`);
  printTable(results);
  console.log('\nback-end CPU time per request (all its threads; median [min..max])');
  printTable(results, 'cpu');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
