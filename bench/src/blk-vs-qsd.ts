/**
 * `vhost-ts blk` against qemu-storage-daemon (`--export type=vhost-user-blk`)
 * on the same backing file, driven the same way: the built-in front-end's
 * device setup plus a minimal polling virtio-blk driver (blk-common.ts) keeping
 * a fixed queue depth on one request queue.
 *
 *   node bench/dist/blk-vs-qsd.js [--seconds=3] [--rounds=3] [--span-mib=256] [--io=sync]
 *
 * Workloads: 4 KiB random read and random write at queue depth 32 (IOPS), 1 MiB
 * sequential read and write at queue depth 4 (MB/s). Both back-ends run
 * pinned to CPU 1 (taskset), the driver on CPU 0; both use the page cache
 * (qemu-storage-daemon's file driver defaults: cache.direct=off, aio=threads).
 * Both back-ends run at once and every workload alternates between them
 * (order flipped every round); the table shows medians.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '@vhost-ts/native';
import { isStorageDaemonAvailable } from '@vhost-ts/peers';
import { WORKLOADS, benchArgs, createFilledFile, MiB, openBenchDevice, printTable, runWorkload, startQsd, startVhostTs, type Backend, type BenchDevice, type Result } from './blk-common.js';

const a = benchArgs(process.argv.slice(2));
const seconds = Number(a.seconds ?? 3);
const rounds = Number(a.rounds ?? 3);
const span = Number(a['span-mib'] ?? 256) * MiB;
const io = a.io ?? 'sync';

const avail = isStorageDaemonAvailable();
if (!avail.ok) {
  console.error(`blk-vs-qsd: ${avail.reason}`);
  process.exit(2);
}

const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-blk-qsd-'));
const file = path.join(dir, 'disk.img');
const results: Result[] = [];
try {
  native.setAffinity([0]);
  createFilledFile(file, span);
  const starters: (() => Promise<Backend>)[] = [() => startVhostTs(dir, file, [`--io=${io}`], '1', `vhost-ts blk (${io})`), () => startQsd(dir, file, '1')];
  const workloads = [WORKLOADS.randread4k!, WORKLOADS.randwrite4k!, WORKLOADS.seqread1m!, WORKLOADS.seqwrite1m!];
  // Both back-ends run at once (the idle one sleeps); every workload alternates between them,
  // so each A/B pair is measured seconds apart on this noisy shared machine.
  const bes: Backend[] = [];
  const devs: BenchDevice[] = [];
  try {
    for (const start of starters) {
      const be = await start();
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
  console.log(`\nvhost-ts blk vs qemu-storage-daemon, same file, medians of ${rounds} interleaved rounds of ${seconds} s (4k: IOPS, 1m: MB/s; median [min..max])`);
  printTable(results);
  console.log('\nback-end CPU time per request (all its threads; median [min..max])');
  printTable(results, 'cpu');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
