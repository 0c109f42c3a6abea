/**
 * Ring throughput in one thread: `node bench/dist/rings.js` (after `npx tsc -b bench`).
 * Options: `--time MS` per task (default 700), `--quick` (fewer cases).
 *
 * What is measured (driver and device interleaved in this thread, Q = 1024):
 * - per round, the driver adds `batch` one-descriptor chains (device-readable,
 *   `payload` bytes at a distinct guest buffer), publishes and checks the kick
 *   decision; the device pops the burst, copies each payload out of guest memory
 *   into a local buffer (Chain.read), pushes used entries, flushes and checks the
 *   notification decision; the driver reaps the used entries. One task iteration
 *   moves 4096 descriptors; descriptors/s = 4096 / mean iteration time.
 * - GPA translation: GuestMemory.translate over 8 regions, 1000 lookups per
 *   iteration, (a) always the same region (last-hit cache), (b) cycling regions
 *   (binary search).
 * - net header: parseNetHdr from a SAB-backed array, and parseNetHdrFromChain on
 *   a popped chain (fast path: header in the first segment), 1000 per iteration.
 * Guest memory is plain SharedArrayBuffers (no mmap); rings live at GPA 4 GiB.
 */
import { Bench } from 'tinybench';
import {
  Chain,
  GuestMemory,
  NetHeader,
  PackedDeviceRing,
  PackedDriverRing,
  SplitDeviceRing,
  SplitDriverRing,
  createUsedBuffer,
  parseNetHdr,
  parseNetHdrFromChain,
  type DeviceRing,
  type DriverRing,
} from '@vhost-ts/virtio';

const Q = 1024;
const PER_ITER = 4096;
const BUF_STRIDE = 2048;
const RING_GPA = 4 * 1024 ** 3;

const args = process.argv.slice(2);
const timeArg = args.indexOf('--time');
const TIME = timeArg >= 0 ? Number(args[timeArg + 1]) : 700;
const QUICK = args.includes('--quick');

function makeMemory(): GuestMemory {
  return new GuestMemory([
    { gpa: 0, size: 4 * 1024 * 1024, sab: new SharedArrayBuffer(4 * 1024 * 1024), sabOffset: 0 },
    { gpa: RING_GPA, size: 1024 * 1024, sab: new SharedArrayBuffer(1024 * 1024), sabOffset: 0 },
  ]);
}

function makeRings(kind: 'split' | 'packed', mem: GuestMemory): { drv: DriverRing<number>; dev: DeviceRing } {
  if (kind === 'split') {
    const cfg = { size: Q, descGpa: RING_GPA, availGpa: RING_GPA + 16 * Q, usedGpa: RING_GPA + 0x8000, eventIdx: true };
    return { drv: new SplitDriverRing<number>(mem, cfg), dev: new SplitDeviceRing(mem, cfg) };
  }
  const cfg = { size: Q, descGpa: RING_GPA, driverEventGpa: RING_GPA + 0x8000, deviceEventGpa: RING_GPA + 0x8004, eventIdx: true };
  const drv = new PackedDriverRing<number>(mem, cfg);
  return { drv, dev: new PackedDeviceRing(mem, cfg, { vringBase: drv.vringBase }) };
}

/** One task: returns the function tinybench times (moves PER_ITER descriptors). */
function ringTask(kind: 'split' | 'packed', payload: number, batch: number): () => void {
  const mem = makeMemory();
  const { drv, dev } = makeRings(kind, mem);
  const chains = Array.from({ length: batch }, () => new Chain(4));
  const local = new Uint8Array(2048);
  const used = createUsedBuffer<number>();
  const addrs = [0];
  const lens = [payload];
  let slot = 0;
  let sink = 0;
  dev.enableNotifications();
  drv.enableCallbacks();
  return () => {
    for (let done = 0; done < PER_ITER; done += batch) {
      for (let i = 0; i < batch; i++) {
        addrs[0] = (slot++ & (Q - 1)) * BUF_STRIDE;
        drv.add(addrs, lens, 1, 0, i);
      }
      if (drv.needsKick()) sink++;
      const n = dev.popBurst(chains, batch);
      for (let i = 0; i < n; i++) {
        const c = chains[i]!;
        sink += c.read(0, local, 0, payload);
        dev.push(c.head, 0);
      }
      if (dev.needsNotify()) sink++;
      while (drv.getUsed(used)) sink++;
      dev.enableNotifications();
      drv.enableCallbacks();
    }
    if (sink === -1) console.log(sink);
  };
}

function translateTask(cycle: boolean): () => void {
  const regions = [];
  const gpas: number[] = [];
  for (let i = 0; i < 8; i++) {
    const gpa = i === 0 ? 0 : 2 ** 30 * (i + 3);
    regions.push({ gpa, size: 1 << 20, sab: new SharedArrayBuffer(1 << 20), sabOffset: 0 });
    gpas.push(gpa + 4096);
  }
  const mem = new GuestMemory(regions);
  let sink = 0;
  return () => {
    for (let k = 0; k < 1000; k++) sink += mem.translate(gpas[cycle ? k & 7 : 3]! + (k & 255), 64);
    if (sink === -1) console.log(sink);
  };
}

function netHdrTasks(): { raw: () => void; chain: () => void } {
  const mem = makeMemory();
  const { drv, dev } = makeRings('split', mem);
  const hdr = Uint8Array.of(1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0, 1, 0);
  mem.write(0x1000, hdr, 0, 12);
  drv.add([0x1000], [1514], 1, 0, 0);
  drv.publish();
  const c = new Chain();
  dev.pop(c);
  const u8 = mem.regions[0]!.u8;
  const h = new NetHeader();
  let sink = 0;
  return {
    raw: () => {
      for (let k = 0; k < 1000; k++) {
        parseNetHdr(u8, 0x1000, 12, h);
        sink += h.gsoSize;
      }
      if (sink === -1) console.log(sink);
    },
    chain: () => {
      for (let k = 0; k < 1000; k++) {
        parseNetHdrFromChain(c, 12, h);
        sink += h.csumStart;
      }
      if (sink === -1) console.log(sink);
    },
  };
}

interface Row {
  case: string;
  unit: string;
  rate: string;
  'ns/op': string;
  'rme %': string;
  samples: number;
}

async function main(): Promise<void> {
  const bench = new Bench({ time: TIME, warmupTime: 200 });
  const ops = new Map<string, { perIter: number; unit: string }>();
  const payloads = QUICK ? [64] : [64, 1500];
  const batches = QUICK ? [32] : [1, 32, 256];
  for (const kind of ['split', 'packed'] as const) {
    for (const payload of payloads) {
      for (const batch of batches) {
        const name = `${kind} ${payload} B batch ${batch}`;
        bench.add(name, ringTask(kind, payload, batch));
        ops.set(name, { perIter: PER_ITER, unit: 'desc/s' });
      }
    }
  }
  bench.add('translate, same region (cache hit)', translateTask(false));
  ops.set('translate, same region (cache hit)', { perIter: 1000, unit: 'lookup/s' });
  bench.add('translate, 8 regions cycling', translateTask(true));
  ops.set('translate, 8 regions cycling', { perIter: 1000, unit: 'lookup/s' });
  const nh = netHdrTasks();
  bench.add('net hdr parse (Uint8Array)', nh.raw);
  ops.set('net hdr parse (Uint8Array)', { perIter: 1000, unit: 'parse/s' });
  bench.add('net hdr parse (from chain)', nh.chain);
  ops.set('net hdr parse (from chain)', { perIter: 1000, unit: 'parse/s' });

  await bench.run();
  const rows: Row[] = [];
  for (const t of bench.tasks) {
    const r = t.result;
    const o = ops.get(t.name)!;
    if (r.state !== 'completed') {
      rows.push({ case: t.name, unit: o.unit, rate: r.state, 'ns/op': '', 'rme %': '', samples: 0 });
      continue;
    }
    const meanMs = r.latency.mean;
    const rate = (o.perIter * 1000) / meanMs;
    rows.push({
      case: t.name,
      unit: o.unit,
      rate: rate >= 1e6 ? `${(rate / 1e6).toFixed(2)} M` : `${(rate / 1e3).toFixed(1)} k`,
      'ns/op': ((meanMs * 1e6) / o.perIter).toFixed(1),
      'rme %': r.latency.rme.toFixed(1),
      samples: r.latency.samplesCount,
    });
  }
  console.log(`node ${process.version}, Q=${Q}, ${PER_ITER} descriptors per iteration, ${TIME} ms per task`);
  console.table(rows);
}

await main();
