/**
 * The floor under the data plane's wake-up latency on this machine:
 *
 *   node bench/dist/wake-floor.js [--samples N=2000] [--gaps 1000,300,150,50] [--waker-cpu 0] [--sleeper-cpu 1]
 *
 * (build first: `npx tsc -b bench`). Two worker threads pinned to different
 * CPUs: the sleeper blocks in `Atomics.wait`; the waker pauses `gap` µs (so
 * both CPUs can go idle, as between a guest's kicks), stores a sequence number,
 * `Atomics.notify`s and spins until the sleeper has written it back. One
 * sample = one thread wake-up across CPUs plus one cache-line hand-off back,
 * with no ring, no eventfd and no main thread: the least a wake-up of a
 * sleeping queue worker can cost here. Compare with `bench/dist/dataplane.js
 * --gap-us G` (kick eventfd -> main-thread poller -> doorbell -> worker ->
 * used entry: two wake-ups) at the same gaps.
 *
 * On a KVM guest whose idle vCPUs halt (no cpuidle driver, no guest
 * halt-polling), waking an idle vCPU costs a VM exit and an IPI through the
 * host; how long the host lets the vCPU sleep grows with the gap.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { native } from '@vhost-ts/native';

interface Init {
  role: 'waker' | 'sleeper';
  cpu: number;
  sab: SharedArrayBuffer;
  samples: number;
  gapUs: number;
}

// Words of the shared block (each on its own cache line).
const W_SEQ = 0; // waker -> sleeper
const W_ACK = 16; // sleeper -> waker
const W_PAUSE = 32; // never written: the waker's timed wait
const W_STOP = 48;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? String(process.argv[i + 1]) : def;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function sleeper(i32: Int32Array): void {
  let seen = 0;
  for (;;) {
    Atomics.wait(i32, W_SEQ, seen);
    if (Atomics.load(i32, W_STOP) !== 0) return;
    seen = Atomics.load(i32, W_SEQ);
    Atomics.store(i32, W_ACK, seen);
  }
}

function waker(i32: Int32Array, samples: number, gapUs: number): number[] {
  const out: number[] = [];
  for (let s = 1; s <= samples; s++) {
    Atomics.wait(i32, W_PAUSE, 0, gapUs / 1000);
    const t0 = performance.now();
    Atomics.store(i32, W_SEQ, s);
    Atomics.notify(i32, W_SEQ);
    while (Atomics.load(i32, W_ACK) !== s) {
      /* spin: the waker stays on its CPU, as the guest's driver does after a kick */
    }
    out.push((performance.now() - t0) * 1000);
  }
  return out;
}

async function runGap(samples: number, gapUs: number, wakerCpu: number, sleeperCpu: number): Promise<number[]> {
  const sab = new SharedArrayBuffer(64 * 4);
  const start = (role: Init['role'], cpu: number): Worker =>
    new Worker(fileURLToPath(import.meta.url), { workerData: { role, cpu, sab, samples, gapUs } satisfies Init });
  const s = start('sleeper', sleeperCpu);
  await new Promise((r) => setTimeout(r, 100)); // the sleeper is in Atomics.wait
  const w = start('waker', wakerCpu);
  const lat = await new Promise<number[]>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  const i32 = new Int32Array(sab);
  Atomics.store(i32, W_STOP, 1);
  Atomics.add(i32, W_SEQ, 1);
  Atomics.notify(i32, W_SEQ);
  await Promise.all([new Promise((r) => s.once('exit', r)), new Promise((r) => w.once('exit', r))]);
  return lat.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const samples = Number(arg('--samples', '2000'));
  const gaps = arg('--gaps', '1000,300,150,50').split(',').map(Number);
  const wakerCpu = Number(arg('--waker-cpu', '0'));
  const sleeperCpu = Number(arg('--sleeper-cpu', '1'));
  console.log(`# wake-floor: Atomics.notify -> Atomics.wait across CPUs ${wakerCpu} -> ${sleeperCpu}, ${samples} samples per gap`);
  console.log('| gap µs | p50 µs | p90 µs | p99 µs |');
  console.log('|---:|---:|---:|---:|');
  for (const gap of gaps) {
    const lat = await runGap(samples, gap, wakerCpu, sleeperCpu);
    console.log(`| ${gap} | ${pct(lat, 50).toFixed(1)} | ${pct(lat, 90).toFixed(1)} | ${pct(lat, 99).toFixed(1)} |`);
  }
}

if (isMainThread) {
  await main();
} else {
  const init = workerData as Init;
  native.setAffinity([init.cpu]);
  const i32 = new Int32Array(init.sab);
  if (init.role === 'sleeper') sleeper(i32);
  else parentPort!.postMessage(waker(i32, init.samples, init.gapUs));
}
