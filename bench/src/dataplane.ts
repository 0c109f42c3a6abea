/**
 * Cross-thread data-plane benchmark: `node bench/dist/dataplane.js` (after `npx tsc -b bench`).
 * Options: `--time MS` per throughput case (default 2000), `--gc-time MS` (default 10000),
 * `--samples N` latency samples (default 2000), `--driver-cpu N` (default 0), `--device-cpu N` (default 1),
 * `--spin-us N` device spin before sleeping (default 50), `--copy 0|1` device copies payloads (default 1),
 * `--packed` (packed ring instead of split), `--gap-us N` pause between latency samples (default 1000),
 * `--no-kick-wait` (the worker sleeps on the doorbell only: kicks reach it through the main thread).
 *
 * Setup: guest memory is one plain SharedArrayBuffer; one vring of Q = 1024
 * with EVENT_IDX. The driver side (virtio's driver ring, as a guest would)
 * runs in one worker pinned to `--driver-cpu`; the device side is a queue
 * worker of @vhost-ts/workers pinned to `--device-cpu`, running this file's
 * default export as its module (sink: pops bursts of up to 64, copies each
 * payload out with Chain.read unless `--copy 0`, completes with len 0). The
 * main thread only forwards kicks (native Poller -> doorbell).
 *
 * 1. Throughput: the driver keeps the ring full, adding `batch` one-descriptor
 *    chains (64 or 1500 B) per publish and kicking only when the device asks
 *    (needsKick); it polls used entries (callbacks off). descriptors/s.
 * 2. Wake-up latency: the device sleeps (notifications on, after its spin);
 *    the driver adds one chain, kicks the eventfd and spins until the used
 *    entry is visible: kick -> the worker's poll() on the kick fd returns (with
 *    `--no-kick-wait`: main-thread poller -> doorbell -> Atomics.wait returns)
 *    -> pop -> module -> used. `--gap-us` pause between samples. p50/p99.
 * 3. GC: a `--gc-time` run at 64 B, batch 32, counting 'gc' performance
 *    entries in the device worker, the driver worker and the main thread.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { availableParallelism, cpus as osCpus } from 'node:os';
import { native } from '@vhost-ts/native';
import {
  GuestMemory,
  PackedDriverRing,
  SplitDriverRing,
  createUsedBuffer,
  packedDescBytes,
  splitAvailBytes,
  splitDescBytes,
  splitUsedBytes,
  type DriverRing,
} from '@vhost-ts/virtio';
import { QueueWorkerManager, defineModule } from '@vhost-ts/workers';

const Q = 1024;
const BUF_STRIDE = 2048;
const MEM_GPA = 0x100000;
const MEM_BYTES = 4 << 20;

/** Ring layout shared by main and driver. */
interface Layout {
  kind: 'split' | 'packed';
  sab: SharedArrayBuffer;
  descGpa: number;
  driverGpa: number;
  deviceGpa: number;
  bufGpa: number;
  kickFd: number;
}

type DriverCommand =
  | { cmd: 'throughput'; payload: number; batch: number; ms: number; warmupMs: number }
  | { cmd: 'latency'; samples: number; gapMs: number }
  | { cmd: 'gc-begin' }
  | { cmd: 'gc-end' }
  | { cmd: 'exit' };

// ---------------------------------------------------------------------------
// The device-side module (this file's default export, loaded by the queue worker).

export default defineModule((ctx) => {
  const copy = ctx.options.copy !== '0';
  const scratch = new Uint8Array(BUF_STRIDE);
  let chains = 0;
  let gc = 0;
  let gcMs = 0;
  /** Absolute times (ms since the epoch) of this isolate's collections, to count those inside a window. */
  const gcAt: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc++;
      gcMs += e.duration;
      if (gcAt.length < 10_000) gcAt.push(performance.timeOrigin + e.startTime);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  return {
    process(burst) {
      const ring = burst.ring;
      const cs = burst.chains;
      const n = burst.count;
      for (let i = 0; i < n; i++) {
        const c = cs[i]!;
        if (copy) c.read(0, scratch, 0, c.readableBytes < BUF_STRIDE ? c.readableBytes : BUF_STRIDE);
        ring.complete(c, 0);
      }
      chains += n;
    },
    stats: () => ({ chains, gc, gcMs }),
    rpc: { gcTimes: () => gcAt.slice() },
    close: () => obs.disconnect(),
  };
});

// ---------------------------------------------------------------------------
// Driver worker.

function driverMain(layout: Layout, cpu: number): void {
  native.setAffinity([cpu]);
  const mem = new GuestMemory([{ gpa: MEM_GPA, size: MEM_BYTES, sab: layout.sab, sabOffset: 0 }]);
  const ring: DriverRing<number> =
    layout.kind === 'split'
      ? new SplitDriverRing<number>(mem, { size: Q, descGpa: layout.descGpa, availGpa: layout.driverGpa, usedGpa: layout.deviceGpa, eventIdx: true })
      : new PackedDriverRing<number>(mem, { size: Q, descGpa: layout.descGpa, driverEventGpa: layout.driverGpa, deviceEventGpa: layout.deviceGpa, eventIdx: true });
  ring.disableCallbacks();
  const used = createUsedBuffer<number>();
  const addrs = [0];
  const lens = [0];
  let slot = 0;
  let gcCount = 0;
  const obs = new PerformanceObserver((list) => (gcCount += list.getEntries().length));
  obs.observe({ entryTypes: ['gc'] });
  const pause = new Int32Array(new SharedArrayBuffer(4));

  const reap = (): number => {
    let n = 0;
    while (ring.getUsed(used)) n++;
    return n;
  };
  const add = (payload: number): boolean => {
    addrs[0] = layout.bufGpa + (slot % Q) * BUF_STRIDE;
    lens[0] = payload;
    if (ring.add(addrs, lens, 1, 0, slot) < 0) return false;
    slot = (slot + 1) % Q;
    return true;
  };
  const kickIfNeeded = (): number => {
    if (ring.needsKick()) {
      native.eventfdWrite(layout.kickFd, 1);
      return 1;
    }
    return 0;
  };

  function throughput(payload: number, batch: number, ms: number, warmupMs: number): { descPerSec: number; kicks: number } {
    let done = 0;
    let kicks = 0;
    let t0 = performance.now();
    let measuring = false;
    let deadline = t0 + warmupMs;
    for (let iter = 0; ; iter++) {
      done += reap();
      if (ring.numFree >= batch) {
        for (let b = 0; b < batch; b++) add(payload);
        kicks += kickIfNeeded();
      }
      if ((iter & 1023) === 0) {
        const t = performance.now();
        if (t >= deadline) {
          if (measuring) {
            return { descPerSec: (done / (t - t0)) * 1000, kicks };
          }
          measuring = true;
          done = 0;
          kicks = 0;
          t0 = t;
          deadline = t + ms;
        }
      }
    }
  }

  function drain(): void {
    const end = performance.now() + 2000;
    for (let i = 1; ring.numFree < Q; i++) {
      reap();
      kickIfNeeded();
      if ((i & 4095) === 0 && performance.now() > end) break;
    }
  }

  function latency(samples: number, gapMs: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      Atomics.wait(pause, 0, 0, gapMs);
      add(64);
      const t0 = performance.now();
      // Always kick: the device sleeps with notifications on, so needsKick is true; kick unconditionally
      // to measure the doorbell path even if the driver's suppression view were stale.
      ring.publish();
      native.eventfdWrite(layout.kickFd, 1);
      while (!ring.getUsed(used)) {
        /* spin until processed */
      }
      out.push(performance.now() - t0);
    }
    return out;
  }

  parentPort!.on('message', (m: DriverCommand) => {
    switch (m.cmd) {
      case 'throughput': {
        const r = throughput(m.payload, m.batch, m.ms, m.warmupMs);
        drain();
        parentPort!.postMessage({ ...r, payload: m.payload, batch: m.batch });
        break;
      }
      case 'latency':
        parentPort!.postMessage({ latency: latency(m.samples, m.gapMs) });
        break;
      case 'gc-begin':
        gcCount = 0;
        parentPort!.postMessage({ ok: true });
        break;
      case 'gc-end':
        // Let pending observer callbacks run first.
        setTimeout(() => parentPort!.postMessage({ gc: gcCount }), 50);
        break;
      case 'exit':
        obs.disconnect();
        process.exit(0);
    }
  });
  parentPort!.postMessage({ ready: true });
}

// ---------------------------------------------------------------------------
// Main.

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const timeMs = arg('--time', 2000);
  const gcTimeMs = arg('--gc-time', 10_000);
  const samples = arg('--samples', 2000);
  const driverCpu = arg('--driver-cpu', 0);
  const deviceCpu = arg('--device-cpu', 1);
  const spinUs = arg('--spin-us', 50);
  const copy = arg('--copy', 1);
  const kind = process.argv.includes('--packed') ? 'packed' : 'split';

  // Guest memory and ring layout.
  const sab = new SharedArrayBuffer(MEM_BYTES);
  let next = MEM_GPA;
  const alloc = (bytes: number, align: number): number => {
    const at = Math.ceil(next / align) * align;
    next = at + bytes;
    return at;
  };
  const descGpa = alloc(kind === 'split' ? splitDescBytes(Q) : packedDescBytes(Q), 4096);
  const driverGpa = alloc(kind === 'split' ? splitAvailBytes(Q) : 4, 64);
  const deviceGpa = alloc(kind === 'split' ? splitUsedBytes(Q) : 4, 4096);
  const bufGpa = alloc(Q * BUF_STRIDE, 4096);
  const kickFd = native.eventfdCreate(0);
  const callFd = native.eventfdCreate(0);
  const layout: Layout = { kind, sab, descGpa, driverGpa, deviceGpa, bufGpa, kickFd };

  let mainGc = 0;
  const obs = new PerformanceObserver((list) => (mainGc += list.getEntries().length));
  obs.observe({ entryTypes: ['gc'] });

  // Driver first (it initialises the ring), then the device.
  const driver = new Worker(fileURLToPath(import.meta.url), { workerData: { role: 'driver', layout, cpu: driverCpu } });
  const replies: ((v: unknown) => void)[] = [];
  driver.on('message', (m: unknown) => replies.shift()?.(m));
  const ask = <T>(m: DriverCommand | null): Promise<T> =>
    new Promise<T>((resolve) => {
      replies.push(resolve as (v: unknown) => void);
      if (m !== null) driver.postMessage(m);
    });
  await ask<{ ready: true }>(null);

  const manager = new QueueWorkerManager();
  const dev = await manager.startDevice({
    id: 'bench',
    module: new URL(import.meta.url),
    moduleOptions: { copy: String(copy) },
    features: (1n << 29n) | (1n << 32n) | (kind === 'packed' ? 1n << 34n : 0n),
    regions: [{ gpa: MEM_GPA, size: MEM_BYTES, sab }],
    rings: [{ index: 0, kind, size: Q, descGpa, driverGpa, deviceGpa, lastAvailIdx: 0, kickFd, callFd }],
    cpus: [deviceCpu],
    spinUs,
    burstSize: 64,
    kickWait: !process.argv.includes('--no-kick-wait'),
  });

  const cpuModel = osCpus()[0]?.model ?? 'unknown';
  console.log(`# vhost-ts data plane, cross-thread (${kind} ring, Q=${Q}, EVENT_IDX)`);
  console.log(`# node ${process.version}, ${availableParallelism()} CPUs (${cpuModel}); driver on CPU ${driverCpu}, device worker on CPU ${deviceCpu}`);
  console.log(`# device: burst 64, spin ${spinUs} us, ${copy ? 'copies each payload out (Chain.read)' : 'does not touch payloads'}; ${timeMs} ms per case`);
  console.log('');
  console.log('| payload | batch | Mdesc/s | Gbit/s | kicks/s |');
  console.log('|--------:|------:|--------:|-------:|--------:|');
  for (const payload of [64, 1500]) {
    for (const batch of [1, 32, 256]) {
      const r = await ask<{ descPerSec: number; kicks: number }>({ cmd: 'throughput', payload, batch, ms: timeMs, warmupMs: 300 });
      const gbit = (r.descPerSec * payload * 8) / 1e9;
      console.log(
        `| ${payload} | ${batch} | ${(r.descPerSec / 1e6).toFixed(2)} | ${gbit.toFixed(2)} | ${Math.round((r.kicks / timeMs) * 1000)} |`,
      );
    }
  }

  const wBefore = dev.stats().workers[0]!;
  const lat = (await ask<{ latency: number[] }>({ cmd: 'latency', samples, gapMs: arg('--gap-us', 1000) / 1000 })).latency.sort((a, b) => a - b);
  const wAfter = dev.stats().workers[0]!;
  console.log('');
  console.log(`wake-up latency (kick eventfd -> worker -> used visible), ${samples} samples, ${arg("--gap-us", 1000)} us apart:`);
  console.log(
    `  p50 ${(pct(lat, 50) * 1000).toFixed(1)} us, p90 ${(pct(lat, 90) * 1000).toFixed(1)} us, p99 ${(pct(lat, 99) * 1000).toFixed(1)} us, max ${(lat.at(-1)! * 1000).toFixed(1)} us; device wake-ups during the run: ${wAfter.wakeups - wBefore.wakeups}`,
  );

  // GC during a long run. Device collections are counted by time, so the comlink
  // calls that fetch them (which allocate in the worker) fall outside the window.
  const remote = dev.remote(0);
  await ask({ cmd: 'gc-begin' });
  mainGc = 0;
  const w0 = performance.timeOrigin + performance.now();
  const r = await ask<{ descPerSec: number }>({ cmd: 'throughput', payload: 64, batch: 32, ms: gcTimeMs, warmupMs: 300 });
  const w1 = performance.timeOrigin + performance.now();
  const mainGcRun = mainGc;
  const drvGc = (await ask<{ gc: number }>({ cmd: 'gc-end' })).gc;
  await new Promise((r) => setTimeout(r, 50));
  const devGcTimes = (await remote.call('gcTimes')) as number[];
  const devGc = devGcTimes.filter((t) => t >= w0 && t <= w1).length;
  console.log('');
  console.log(
    `GC during a ${gcTimeMs / 1000} s run (64 B, batch 32, ${(r.descPerSec / 1e6).toFixed(2)} Mdesc/s): device worker ${devGc}, driver worker ${drvGc}, main thread ${mainGcRun}`,
  );
  const st = dev.stats().workers[0]!;
  const rs = st.rings[0]!;
  console.log(
    `device counters: ${rs.chains} chains, ${rs.bursts} bursts (${(rs.chains / Math.max(1, rs.bursts)).toFixed(1)} chains/burst), ${rs.kicks} kicks, ${rs.calls} calls, ${rs.suppressed} suppressed, ${st.wakeups} wake-ups, ${st.sleeps} sleeps`,
  );

  obs.disconnect();
  driver.postMessage({ cmd: 'exit' } satisfies DriverCommand);
  await new Promise((r) => driver.once('exit', r));
  await dev.stop();
  native.close(kickFd);
  native.close(callFd);
}

if (isMainThread) {
  await main();
} else if ((workerData as { role?: string } | null)?.role === 'driver') {
  const d = workerData as { layout: Layout; cpu: number };
  driverMain(d.layout, d.cpu);
}
// Otherwise this file was imported by a queue worker as its module: only the default export matters.
