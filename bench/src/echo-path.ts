/**
 * The net echo data path in one thread, and the ring primitives it is made of:
 *
 *   node bench/dist/echo-path.js [--time MS=700] [--only echo|prims]
 *
 * (build first: `npx tsc -b bench`). tinybench tasks, nothing crosses a core,
 * so these isolate the JavaScript cost per packet from cache-line hand-off and
 * from the scheduling noise of a shared machine (the real comparison is
 * perf-compare.js):
 *
 * - echo 64 / 1500 B: the shipped `echo` module (packages/net, the same code
 *   the daemon's queue worker runs) over a split TX/RX ring pair (Q = 256,
 *   IN_ORDER-style in-order refill, MRG_RXBUF, 12-byte header), driven like
 *   DPDK's virtio-user io loop: per round the driver adds 32 TX frames and
 *   refills 32 RX buffers, the module's poll() echoes them, the runtime's
 *   per-round work is done as the queue worker does it (flush with one
 *   used-index store per ring and a notification check), the driver reaps
 *   both rings. A minimal QueueRing stands in for the worker runtime's.
 *   ns/packet = mean iteration time / 1024 packets; also CPU ns/op from
 *   process.cpuUsage over a second loop (robust to time-sharing).
 * - pop / push per descriptor, split vs packed: pop of 1024 one-descriptor
 *   chains (ring rewound between iterations, nothing written), and push of
 *   1024 used entries with one flush.
 * - copy guest to guest: Chain.copyTo 64 / 1500 B inside one region (copyWithin),
 *   source and destination at the same alignment (as DPDK's mbufs are) and not
 *   (V8 copies a SharedArrayBuffer with relaxed atomics: word-wise only when
 *   both sides share the word alignment).
 * (rings.js has pop+copy+push round trips, GPA translation and header parsing.)
 */
import { Bench } from 'tinybench';
import {
  Chain,
  GuestMemory,
  PackedDeviceRing,
  PackedDriverRing,
  SplitDeviceRing,
  SplitDriverRing,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  createUsedBuffer,
  type DeviceRing,
} from '@vhost-ts/virtio';
import type { QueueContext, QueueModule, QueueRing } from '@vhost-ts/workers/module-api';
import echo from '@vhost-ts/net/modules/echo';

const args = process.argv.slice(2);
const opt = (name: string, d: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : d;
};
const TIME = Number(opt('--time', '700'));
const ONLY = opt('--only', 'all');

const Q = 256;
const BURST = 32;
const PER_ITER = 1024;
const RING_GPA = 0x4000_0000;
const BUF_STRIDE = 2048;

function makeMemory(): GuestMemory {
  return new GuestMemory([
    { gpa: 0, size: 4 << 20, sab: new SharedArrayBuffer(4 << 20), sabOffset: 0 },
    { gpa: RING_GPA, size: 1 << 20, sab: new SharedArrayBuffer(1 << 20), sabOffset: 0 },
  ]);
}

function splitCfg(k: number): { size: number; descGpa: number; availGpa: number; usedGpa: number; eventIdx: boolean } {
  const base = RING_GPA + k * 0x20000;
  return { size: Q, descGpa: base, availGpa: base + 16 * Q, usedGpa: base + 0x8000, eventIdx: false };
}

/** What the worker runtime's RingRuntime does for a module, minus control-block bookkeeping. */
class BenchRing implements QueueRing {
  readonly slot: number;
  readonly index: number;
  readonly kind = 'split' as const;
  readonly size = Q;
  mode: 'burst' | 'manual' = 'burst';
  readonly active = true;
  dirty = false;
  private readonly scratch = new Chain();
  constructor(
    index: number,
    readonly device: SplitDeviceRing,
  ) {
    this.slot = index;
    this.index = index;
  }
  pop(): Chain | null {
    return this.popInto(this.scratch) ? this.scratch : null;
  }
  popInto(chain: Chain): boolean {
    return this.device.pop(chain);
  }
  available(): number {
    return this.device.available();
  }
  complete(chain: Chain, len: number): void {
    this.completeId(chain.head, len);
  }
  completeId(head: number, len: number): void {
    this.device.push(head, len);
    this.dirty = true;
  }
  /** The runtime's flush after the module call: one used-index store, notification check. */
  flush(): boolean {
    this.dirty = false;
    return this.device.needsNotify();
  }
}

function echoTask(frame: number): () => void {
  const mem = makeMemory();
  const features = (1n << BigInt(VIRTIO_F_VERSION_1)) | (1n << BigInt(VIRTIO_NET_F_MRG_RXBUF));
  const rxDrv = new SplitDriverRing<number>(mem, splitCfg(0));
  const txDrv = new SplitDriverRing<number>(mem, splitCfg(1));
  const rx = new BenchRing(0, new SplitDeviceRing(mem, splitCfg(0)));
  const tx = new BenchRing(1, new SplitDeviceRing(mem, splitCfg(1)));
  const rings = [rx, tx];
  const ctx = {
    deviceId: 'bench',
    workerIndex: 0,
    rings,
    ring: (i: number) => rings[i],
    memory: mem,
    features,
    hasFeature: (bit: number) => (features & (1n << BigInt(bit))) !== 0n,
    options: {},
    log: { debug() {}, info() {}, warn() {}, error() {} },
    logging: false,
    logWrite() {},
    newChain: (capacity?: number) => new Chain(capacity),
    createPool: () => Promise.reject(new Error('no pools in the bench')),
    setEventLoop() {},
    wake() {},
  } as unknown as QueueContext;
  const mod = (echo as (c: QueueContext) => QueueModule)(ctx);
  const poll = mod.poll!.bind(mod);
  // TX frames: header (12 zero bytes) + frame in one descriptor, at distinct buffers; RX buffers of 2048 B.
  const txLen = 12 + frame;
  const addr = [0];
  const len = [0];
  const used = createUsedBuffer<number>();
  let txSlot = 0;
  let rxSlot = 0;
  const fillRx = (n: number): void => {
    for (let i = 0; i < n; i++) {
      addr[0] = (Q + (rxSlot++ & (Q - 1))) * BUF_STRIDE;
      len[0] = BUF_STRIDE;
      rxDrv.add(addr, len, 0, 1, 0);
    }
    rxDrv.publish();
  };
  fillRx(Q);
  let sink = 0;
  return () => {
    for (let done = 0; done < PER_ITER; done += BURST) {
      for (let i = 0; i < BURST; i++) {
        addr[0] = (txSlot++ & (Q - 1)) * BUF_STRIDE;
        len[0] = txLen;
        txDrv.add(addr, len, 1, 0, 0);
      }
      txDrv.publish();
      const n = poll();
      if (rx.dirty && rx.flush()) sink++;
      if (tx.dirty && tx.flush()) sink++;
      if (n !== BURST) throw new Error(`echo moved ${n} frames, expected ${BURST}`);
      let got = 0;
      while (rxDrv.getUsed(used)) got++;
      while (txDrv.getUsed(used)) sink++;
      fillRx(got);
    }
    if (sink === -1) console.log(sink);
  };
}

function popTask(kind: 'split' | 'packed'): () => void {
  const mem = makeMemory();
  const chain = new Chain(4);
  const addr = [0];
  const len = [64];
  let dev: DeviceRing;
  if (kind === 'split') {
    const cfg = splitCfg(0);
    const drv = new SplitDriverRing<number>(mem, cfg);
    dev = new SplitDeviceRing(mem, cfg);
    for (let i = 0; i < Q; i++) {
      addr[0] = i * BUF_STRIDE;
      drv.add(addr, len, 1, 0, i);
    }
    drv.publish();
    const d = dev as SplitDeviceRing;
    return () => {
      for (let r = 0; r < PER_ITER / Q; r++) {
        d.lastAvailIdx = 0;
        for (let i = 0; i < Q; i++) d.pop(chain);
      }
    };
  }
  const cfg = { size: Q, descGpa: RING_GPA, driverEventGpa: RING_GPA + 0x8000, deviceEventGpa: RING_GPA + 0x8004, eventIdx: false };
  const drv = new PackedDriverRing<number>(mem, cfg);
  const base = drv.vringBase;
  const p = new PackedDeviceRing(mem, cfg, { vringBase: base });
  // Q - 1 entries (a full packed ring would need the wrap): rewind with vringBase.
  for (let i = 0; i < Q - 1; i++) {
    addr[0] = i * BUF_STRIDE;
    drv.add(addr, len, 1, 0, i);
  }
  drv.publish();
  return () => {
    for (let r = 0; r < PER_ITER / Q; r++) {
      p.vringBase = base;
      for (let i = 0; i < Q - 1; i++) p.pop(chain);
      p.pop(chain); // empty: one more check, like a poll
    }
  };
}

function pushTask(kind: 'split' | 'packed'): () => void {
  const mem = makeMemory();
  if (kind === 'split') {
    const d = new SplitDeviceRing(mem, splitCfg(0));
    return () => {
      for (let i = 0; i < PER_ITER; i++) d.push(i & (Q - 1), 64);
      d.flush();
    };
  }
  const cfg = { size: Q, descGpa: RING_GPA, driverEventGpa: RING_GPA + 0x8000, deviceEventGpa: RING_GPA + 0x8004, eventIdx: false };
  const p = new PackedDeviceRing(mem, cfg, {});
  return () => {
    for (let i = 0; i < PER_ITER; i++) {
      p.push(i & (Q - 1), 64);
      if ((i & 31) === 31) p.flush();
    }
  };
}

function copyTask(bytes: number, skip: number): () => void {
  const mem = makeMemory();
  const cfg = splitCfg(0);
  const drv = new SplitDriverRing<number>(mem, cfg);
  const dev = new SplitDeviceRing(mem, cfg);
  drv.add([0x1000], [bytes + skip], 1, 0, 0);
  drv.add([0x10000], [2048], 0, 1, 1);
  drv.publish();
  const src = new Chain();
  const dst = new Chain();
  dev.pop(src);
  dev.pop(dst);
  let sink = 0;
  return () => {
    for (let i = 0; i < PER_ITER; i++) sink += src.copyTo(dst, bytes, skip, 12);
    if (sink === -1) console.log(sink);
  };
}

async function main(): Promise<void> {
  const bench = new Bench({ time: TIME, warmupTime: 300 });
  const per = new Map<string, number>();
  const fns = new Map<string, () => void>();
  const add = (name: string, fn: () => void, ops = PER_ITER): void => {
    bench.add(name, fn);
    per.set(name, ops);
    fns.set(name, fn);
  };
  if (ONLY === 'all' || ONLY === 'echo') {
    add('echo module 64 B (split, burst 32)', echoTask(64));
    add('echo module 1500 B (split, burst 32)', echoTask(1500));
  }
  if (ONLY === 'all' || ONLY === 'prims') {
    for (const k of ['split', 'packed'] as const) {
      add(`pop 1-desc chain (${k})`, popTask(k));
      add(`push used entry (${k})`, pushTask(k));
    }
    for (const b of [64, 1500]) {
      add(`copy guest->guest ${b} B (Chain.copyTo, same alignment)`, copyTask(b, 12));
      add(`copy guest->guest ${b} B (Chain.copyTo, alignment differs by 4)`, copyTask(b, 8));
    }
  }
  await bench.run();
  // CPU time per op (process.cpuUsage; this bench is one thread): on a machine
  // shared with other work, wall time also counts the time this thread waited for a core.
  const cpuNs = new Map<string, number>();
  for (const [name, fn] of fns) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let iters = 0;
    do {
      for (let k = 0; k < 16; k++) fn();
      iters += 16;
    } while (performance.now() - t0 < TIME);
    const c = process.cpuUsage(c0);
    cpuNs.set(name, ((c.user + c.system) * 1000) / (iters * per.get(name)!));
  }
  console.log(`# echo-path ${new Date().toISOString()} node ${process.version}, load ${(await import('node:os')).loadavg()[0]!.toFixed(2)}`);
  console.log('| case | CPU ns/op | wall ns/op | wall rme % | samples |');
  console.log('|---|---:|---:|---:|---:|');
  for (const t of bench.tasks) {
    const r = t.result;
    if (r.state !== 'completed') {
      console.log(`| ${t.name} | ${cpuNs.get(t.name)!.toFixed(1)} | ${r.state} | | |`);
      continue;
    }
    const ns = (r.latency.mean * 1e6) / per.get(t.name)!;
    console.log(`| ${t.name} | ${cpuNs.get(t.name)!.toFixed(1)} | ${ns.toFixed(1)} | ${r.latency.rme.toFixed(1)} | ${r.latency.samplesCount} |`);
  }
}

await main();
