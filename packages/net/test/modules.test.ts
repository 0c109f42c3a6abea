/**
 * Each shipped module in a real queue worker (QueueWorkerManager, one worker
 * per queue pair), with virtio's driver-side rings playing the guest; the
 * counter tests at the end drive modules in this thread (LocalContext).
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, featureMask } from '@vhost-ts/virtio';
import { QueueWorkerManager, type DeviceWorkers } from '@vhost-ts/workers';
import {
  ETHERTYPE_RARP,
  NET_MODULES,
  SwitchFabric,
  internetChecksum,
  parseMac,
  type NetModuleName,
} from '@vhost-ts/net';
import responderModule from '@vhost-ts/net/modules/responder';
import switchModule from '@vhost-ts/net/modules/switch';
import { NetGuest, TestGuest, parseHeader, testFrame, until, type Used } from './support/guest.js';
import { LocalContext } from './support/queue.js';

const manager = new QueueWorkerManager();
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => manager.stopAll());

const MRG = featureMask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_EVENT_IDX);

interface Port {
  guest: TestGuest;
  pairs: NetGuest[];
  dev: DeviceWorkers;
}

/** A guest with `pairs` queue pairs served by `module` in real workers. */
async function startPort(
  module: NetModuleName,
  o: { pairs?: number; kind?: 'split' | 'packed'; features?: bigint; options?: Record<string, string>; queuesPerWorker?: number } = {},
): Promise<Port> {
  const guest = new TestGuest(16 << 20);
  const kind = o.kind ?? 'split';
  const features = (o.features ?? MRG) | (kind === 'packed' ? featureMask(VIRTIO_F_RING_PACKED) : 0n);
  const pairs: NetGuest[] = [];
  for (let i = 0; i < (o.pairs ?? 1); i++) pairs.push(new NetGuest(guest, i, 12, { kind, size: 256, eventfds: true }));
  const dev = await manager.startDevice({
    id: module,
    module: NET_MODULES[module],
    moduleOptions: o.options ?? {},
    features,
    regions: guest.regions(),
    rings: pairs.flatMap((p) => [p.rx.spec(), p.tx.spec()]),
    queuesPerWorker: o.queuesPerWorker ?? 2,
    spinUs: 0,
  });
  cleanups.push(async () => {
    await dev.stop();
    for (const p of pairs) p.close();
  });
  return { guest, pairs, dev };
}

/** Polls an async check until it passes or the timeout expires. */
async function untilAsync(check: () => Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Collects used RX buffers until `n` frames (by num_buffers) arrived; returns the frames. */
async function receive(g: NetGuest, n: number, timeoutMs = 5000): Promise<Uint8Array[]> {
  const frames: Uint8Array[] = [];
  let parts: Used[] = [];
  let need = 0;
  const ok = await until(() => {
    for (const u of g.rx.reap()) {
      parts.push(u);
      if (parts.length === 1) need = parseHeader(g.rxBytes(u)).numBuffers;
      if (parts.length === need) {
        const total = parts.reduce((s, p) => s + p.len, 0);
        const all = new Uint8Array(total);
        let at = 0;
        for (const p of parts) {
          all.set(g.rxBytes(p), at);
          at += p.len;
        }
        frames.push(all.subarray(12));
        parts = [];
      }
    }
    return frames.length >= n;
  }, timeoutMs);
  if (!ok) throw new Error(`received ${frames.length} of ${n} frames`);
  return frames;
}

describe('echo', () => {
  for (const kind of ['split', 'packed'] as const) {
    it(`returns every frame on the same pair, in order, content intact (${kind}, mergeable)`, async () => {
      const { pairs } = await startPort('echo', { kind });
      const g = pairs[0]!;
      g.postRx(200, 1024);
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 100; i++) {
        const f = testFrame(60 + ((i * 37) % 1900), i);
        sent.push(f);
        expect(g.send(f)).toBeGreaterThanOrEqual(0);
      }
      const got = await receive(g, 100);
      expect(got.map((f) => f.length)).toEqual(sent.map((f) => f.length));
      for (let i = 0; i < 100; i++) expect(got[i]).toEqual(sent[i]);
      let txDone = 0;
      expect(await until(() => (txDone += g.tx.reap().length) === 100)).toBe(true);
    });
  }

  it('holds TX frames while the guest has no RX buffers (backpressure, no loss)', async () => {
    const { pairs, dev } = await startPort('echo');
    const g = pairs[0]!;
    for (let i = 0; i < 10; i++) g.send(testFrame(100, i));
    await new Promise((r) => setTimeout(r, 100));
    expect(g.tx.reap()).toEqual([]);
    g.postRx(10, 2048);
    const got = await receive(g, 10);
    expect(got).toHaveLength(10);
    let txDone = 0;
    expect(await until(() => (txDone += g.tx.reap().length) === 10)).toBe(true);
    const stats = await dev.remote(0).moduleStats();
    expect(stats.rxPackets).toBe(10);
    expect(stats.rxDropped).toBe(0);
  });

  it('serves two queue pairs, each with its own worker, independently', async () => {
    const { pairs, dev } = await startPort('echo', { pairs: 2 });
    expect(dev.workerCount).toBe(2);
    for (const g of pairs) g.postRx(50, 2048);
    for (let i = 0; i < 20; i++) {
      pairs[0]!.send(testFrame(80, 0));
      pairs[1]!.send(testFrame(90, 1));
    }
    const [a, b] = await Promise.all([receive(pairs[0]!, 20), receive(pairs[1]!, 20)]);
    expect(a.every((f) => f.length === 80)).toBe(true);
    expect(b.every((f) => f.length === 90)).toBe(true);
    expect((await dev.remote(1).moduleStats())['q1.rxPackets']).toBe(20);
  });

  it('injects a RARP announcement into RX on the announce RPC', async () => {
    const { pairs, dev } = await startPort('echo');
    const g = pairs[0]!;
    g.postRx(4, 2048);
    const mac = parseMac('52:54:00:12:34:56');
    expect(await dev.remote(0).call('announce', Array.from(mac))).toBe(true);
    const [f] = await receive(g, 1);
    expect(f!.length).toBe(60);
    expect(Array.from(f!.subarray(0, 6))).toEqual([255, 255, 255, 255, 255, 255]);
    expect(f!.subarray(6, 12)).toEqual(mac);
    expect((f![12]! << 8) | f![13]!).toBe(ETHERTYPE_RARP);
    expect(f![21]).toBe(3); // reverse request
  });
});

describe('macswap', () => {
  it('returns frames with destination and source swapped, the rest unchanged', async () => {
    const { pairs } = await startPort('macswap');
    const g = pairs[0]!;
    g.postRx(20, 512); // 1500-byte frames span several buffers
    const f = testFrame(1500, 3, [2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2]);
    g.send(f);
    g.send(testFrame(64, 4, [2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2]));
    const [a, b] = await receive(g, 2);
    expect(Array.from(a!.subarray(0, 12))).toEqual([2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]);
    expect(a!.subarray(12)).toEqual(f.subarray(12));
    expect(Array.from(b!.subarray(0, 12))).toEqual([2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]);
  });
});

describe('sink', () => {
  it('completes and counts every frame and never touches RX', async () => {
    const { pairs, dev } = await startPort('sink');
    const g = pairs[0]!;
    g.postRx(4, 2048);
    for (let i = 0; i < 50; i++) g.send(testFrame(100 + i));
    let done = 0;
    expect(await until(() => (done += g.tx.reap().length) === 50)).toBe(true);
    const stats = await dev.remote(0).moduleStats();
    expect(stats.txPackets).toBe(50);
    expect(stats.txBytes).toBe(50 * 100 + (49 * 50) / 2);
    expect(g.rx.reap()).toEqual([]);
  });
});

const GUEST_MAC = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const OUR_MAC = '02:00:00:00:00:01';

function arpRequest(target: number[]): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6);
  f.set(GUEST_MAC, 6);
  f.set([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], 12);
  f.set(GUEST_MAC, 22);
  f.set([10, 0, 0, 2], 28);
  f.set(target, 38);
  return f;
}

function echoRequest(dst: number[], seq: number): Uint8Array {
  const total = 20 + 8 + 56;
  const f = new Uint8Array(14 + total);
  f.set(parseMac(OUR_MAC), 0);
  f.set(GUEST_MAC, 6);
  f.set([0x08, 0x00], 12);
  f.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 2, ...dst], 14);
  const ipSum = internetChecksum(f, 14, 20);
  f[24] = ipSum >> 8;
  f[25] = ipSum & 0xff;
  f.set([8, 0, 0, 0, 0x12, 0x34, seq >> 8, seq & 0xff], 34);
  for (let i = 0; i < 56; i++) f[42 + i] = i;
  const icmpSum = internetChecksum(f, 34, 64);
  f[36] = icmpSum >> 8;
  f[37] = icmpSum & 0xff;
  return f;
}

describe('responder', () => {
  it('answers ARP and ICMP echo for its address and counts what it ignores', async () => {
    const { pairs, dev } = await startPort('responder', { options: { ip: '10.0.0.1', mac: OUR_MAC } });
    const g = pairs[0]!;
    g.postRx(8, 2048);
    g.send(arpRequest([10, 0, 0, 1]));
    g.send(arpRequest([10, 0, 0, 9])); // not ours
    g.send(echoRequest([10, 0, 0, 1], 7));
    g.send(testFrame(100)); // not ARP/IP
    const [arp, icmp] = await receive(g, 2);
    // ARP reply from our MAC to the guest, sender = 10.0.0.1.
    expect(Array.from(arp!.subarray(0, 12))).toEqual([...GUEST_MAC, ...parseMac(OUR_MAC)]);
    expect(arp![21]).toBe(2);
    expect(Array.from(arp!.subarray(28, 32))).toEqual([10, 0, 0, 1]);
    // ICMP echo reply with valid checksums, addresses swapped.
    expect(icmp![34]).toBe(0);
    expect(Array.from(icmp!.subarray(26, 34))).toEqual([10, 0, 0, 1, 10, 0, 0, 2]);
    expect(internetChecksum(icmp!, 14, 20)).toBe(0);
    expect(internetChecksum(icmp!, 34, 64)).toBe(0);
    expect(icmp![41]).toBe(7);
    let stats: Record<string, number> = {};
    await untilAsync(async () => ((stats = await dev.remote(0).moduleStats()).ignored ?? 0) === 2);
    expect(stats).toMatchObject({ arpReplies: 1, icmpReplies: 1, ignored: 2, txPackets: 4, rxPackets: 2 });
  });

  it('refuses to start without ip=', async () => {
    await expect(startPort('responder')).rejects.toThrow(/ip=/);
  });
});

describe('switch', () => {
  it('floods unknown and broadcast frames, learns, then forwards unicast between two ports', async () => {
    const fabric = SwitchFabric.create({ ports: 3 });
    const a = await startPort('switch');
    const b = await startPort('switch');
    expect(await a.dev.remote(0).call('attach', fabric.sab, 0)).toBe(1);
    expect(await b.dev.remote(0).call('attach', fabric.sab, 1)).toBe(1);
    const ga = a.pairs[0]!;
    const gb = b.pairs[0]!;
    ga.postRx(16, 2048);
    gb.postRx(16, 2048);
    const macA = [2, 0, 0, 0, 0, 0xa];
    const macB = [2, 0, 0, 0, 0, 0xb];
    // A broadcasts: B gets it (port 2 is not attached: nothing queued there).
    const bcast = testFrame(100, 1, [255, 255, 255, 255, 255, 255], macA);
    ga.send(bcast);
    const [f1] = await receive(gb, 1);
    expect(f1).toEqual(bcast);
    expect(fabric.pushed(2, 0)).toBe(0);
    // B answers A by unicast (A's address was learned from the broadcast).
    const reply = testFrame(1400, 2, macA, macB);
    gb.send(reply);
    const [f2] = await receive(ga, 1);
    expect(f2).toEqual(reply);
    // A to B, now known: forwarded, not flooded.
    for (let i = 0; i < 10; i++) ga.send(testFrame(200, 10 + i, macB, macA));
    const f3 = await receive(gb, 10);
    expect(f3.map((f) => f[14]! ^ 14)).toEqual(f3.map((_, i) => (10 + i) & 0xff));
    const sa = await a.dev.remote(0).moduleStats();
    const sb = await b.dev.remote(0).moduleStats();
    expect(sa).toMatchObject({ port: 0, flooded: 1, forwarded: 10, rxPackets: 1 });
    expect(sb).toMatchObject({ port: 1, forwarded: 1, rxPackets: 11 });
    // A frame for a MAC on the sender's own port is filtered.
    ga.send(testFrame(100, 0, macA, [2, 0, 0, 0, 0, 0xc]));
    expect(await untilAsync(async () => (await a.dev.remote(0).moduleStats()).filtered === 1)).toBe(true);
  });

  it('fabric: per-ring pushed and dropped counts stay exact past 2^32 (float64, not int32 words)', () => {
    const fabric = SwitchFabric.create({ ports: 2, slots: 2 });
    const { drops, pushed } = fabric.counterSlots(1, 0);
    fabric.f64[pushed] = 2 ** 40;
    fabric.f64[drops] = 2 ** 33;
    for (let i = 0; i < 3; i++) {
      const slot = fabric.reserve(1, 0);
      if (slot >= 0) fabric.commit(1, 0, slot, 60);
    }
    // Two slots: two frames pushed, the third dropped.
    expect(fabric.pushed(1, 0)).toBe(2 ** 40 + 2);
    expect(fabric.drops(1, 0)).toBe(2 ** 33 + 1);
    // Another worker's view of the same fabric reads the same counts.
    expect(new SwitchFabric(fabric.sab).pushed(1, 0)).toBe(2 ** 40 + 2);
    expect(fabric.pushed(0, 1)).toBe(0);
  });

  it('drops what a port sends before the fabric is attached', async () => {
    const p = await startPort('switch');
    p.pairs[0]!.send(testFrame(100));
    expect(await until(() => p.pairs[0]!.tx.reap().length === 1)).toBe(true);
    expect(await p.dev.remote(0).moduleStats()).toMatchObject({ unattachedDrops: 1 });
  });
});

describe('module counters, in this thread', () => {
  const V1_MRG = featureMask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF);
  const B = 2 ** 40;

  /** A module over queue pair `pair` of a guest, driven here; `step()` is one worker round. */
  function local<M extends { poll(): number }>(factory: (ctx: LocalContext) => M, pair = 0, options: Record<string, string> = {}) {
    const g = new NetGuest(new TestGuest(), pair, 12, { size: 64 });
    const ctx = new LocalContext(g.guest.mem, V1_MRG, g.rx, g.tx, options);
    const mod = factory(ctx);
    return { g, mod, step: () => (mod.poll(), ctx.flush()) };
  }

  it('switch: counts past 2^32 exactly (float64 slots, not closure numbers)', () => {
    const fabric = SwitchFabric.create({ ports: 2, slots: 2 });
    const [a, b, extra] = [local(switchModule), local(switchModule), local(switchModule, 1)];
    for (const p of [a, b, extra]) p.mod.stat.fill(B);
    const macA = [2, 0, 0, 0, 0, 0xa];
    const macB = [2, 0, 0, 0, 0, 0xb];
    a.g.send(testFrame(100, 0, macB, macA)); // before attach: dropped
    extra.g.send(testFrame(100)); // queue pair 1: not served
    a.step();
    extra.step();
    a.mod.rpc.attach(fabric.sab, 0);
    b.mod.rpc.attach(fabric.sab, 1);
    a.g.postRx(8, 2048);
    b.g.postRx(8, 2048);
    a.g.send(testFrame(100, 1, macB, macA)); // unknown: flooded
    a.step();
    b.step(); // B learns A
    b.g.send(testFrame(100, 2, macA, macB)); // known: forwarded
    b.step();
    a.step(); // A learns B
    for (let i = 0; i < 3; i++) a.g.send(testFrame(100, 3 + i, macB, macA)); // two fit the ring of 2 slots
    a.g.send(testFrame(100, 6, macA, macA)); // for A's own port: filtered
    a.g.send(testFrame(1600, 7, macB, macA)); // larger than a slot
    a.step();
    expect(a.mod.stats()).toMatchObject({ unattachedDrops: B + 1, flooded: B + 1, forwarded: B + 2, ringFull: B + 2, filtered: B + 1, extraPairDrops: B });
    expect(b.mod.stats()).toMatchObject({ forwarded: B + 1, flooded: B, ringFull: B, rxPackets: 1 });
    expect(extra.mod.stats()).toMatchObject({ extraPairDrops: B + 1, unattachedDrops: B });
    for (const [port, p] of [a, b].entries()) {
      p.mod.close();
      Atomics.notify(fabric.i32, fabric.bellIndex(port)); // ends the bell wait
    }
  });

  it('responder: counts past 2^32 exactly (float64 slots, not closure numbers)', () => {
    const r = local(responderModule, 0, { ip: '10.0.0.1', mac: OUR_MAC });
    r.mod.stat.fill(B);
    r.g.postRx(8, 2048);
    r.g.send(arpRequest([10, 0, 0, 1]));
    r.g.send(arpRequest([10, 0, 0, 9]));
    r.g.send(echoRequest([10, 0, 0, 1], 1));
    r.g.send(testFrame(100));
    r.step();
    expect(r.mod.stats()).toMatchObject({ arpReplies: B + 1, icmpReplies: B + 1, ignored: B + 2, txPackets: 4, rxPackets: 2 });
  });
});
