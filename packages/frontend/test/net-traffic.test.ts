/**
 * The net data path against the scripted back-end's echo / sink / source:
 * content checks, accounting under injected faults, mergeable buffers, the
 * legacy header, packed rings, indirect descriptors, EVENT_IDX, rate limits.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FrontendDevice, NetTraffic, ParallelNetTraffic, VhostConnection, VhostUserClient, netHeaderSize, type TrafficMode } from '@vhost-ts/frontend';
import { FakeBackend, FAKE_FEATURES, type FakeBackendOptions, type Fault } from './support/fake-backend.js';

const open: { backend: FakeBackend; device: FrontendDevice }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) {
    await o.device.close({ graceful: false });
    o.backend.close();
  }
});

interface Case {
  pairs?: number;
  packed?: boolean;
  queueSize?: number;
  mrg?: boolean;
  indirect?: boolean;
  eventIdx?: boolean;
  backend?: FakeBackendOptions;
}

async function start(c: Case = {}): Promise<{ backend: FakeBackend; device: FrontendDevice }> {
  const { backend, frontendFd } = FakeBackend.pair(c.backend ?? {});
  const client = new VhostUserClient(new VhostConnection(frontendFd), { timeoutMs: 2000 });
  const pairs = c.pairs ?? 1;
  const device = await FrontendDevice.start(client, {
    vrings: 2 * pairs,
    queueSize: c.queueSize ?? 128,
    packed: c.packed ?? false,
    indirect: c.indirect ?? false,
    eventIdx: c.eventIdx ?? false,
    deviceFeatures: ((c.mrg ?? true) ? 1n << 15n : 0n) | (pairs > 1 ? 1n << 22n : 0n),
    requiredQueues: pairs,
    memory: { size: 16 << 20 },
  });
  open.push({ backend, device });
  return { backend, device };
}

async function run(device: FrontendDevice, mode: TrafficMode, frameSize: number, seconds = 0.3, extra = {}) {
  const t = new NetTraffic(device, { mode, frameSize, ...extra });
  return t.run(seconds, 300);
}

describe('loop against an echoing back-end', () => {
  it.each([
    ['split', {}],
    ['packed', { packed: true, queueSize: 100 }],
    ['split + EVENT_IDX', { eventIdx: true }],
    ['packed + EVENT_IDX', { packed: true, eventIdx: true }],
    ['split + indirect', { indirect: true }],
    ['packed + indirect', { packed: true, indirect: true }],
    ['2 queue pairs', { pairs: 2 }],
  ] as [string, Case][])('%s: every frame comes back intact, nothing lost or duplicated', async (_n, c) => {
    const { backend, device } = await start(c);
    backend.startData('echo');
    const r = await run(device, 'loop', 64, 0.3, { indirectTx: c.indirect ?? false });
    expect(r.sent).toBeGreaterThan(100);
    expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0, foreign: 0, reordered: 0 });
    expect(r.queues).toHaveLength(c.pairs ?? 1);
    for (const q of r.queues) expect(q.sent).toBeGreaterThan(0);
    expect(backend.txFrames).toBe(r.sent);
  });

  it('mergeable RX buffers: 5000-byte frames over 2048-byte buffers are reassembled and checked', async () => {
    const { backend, device } = await start({ mrg: true });
    backend.startData('echo');
    const t = new NetTraffic(device, { mode: 'loop', frameSize: 5000 });
    const r = await t.run(0.3, 300);
    expect(r.sent).toBeGreaterThan(10);
    expect(r).toMatchObject({ received: r.sent, lost: 0, bad: 0 });
    expect(t.pairs[0]!.counters.merged).toBe(r.received);
  });

  it('counts past 2^32 exactly (counters and the tracker are float64 slots, not number fields)', async () => {
    const { backend, device } = await start();
    backend.startData('echo');
    const t = new NetTraffic(device, { mode: 'loop', frameSize: 64 });
    // As if 2^40 frames had gone round already: the next sequence number is 2^40 too.
    const B = 2 ** 40;
    const c = t.pairs[0]!.counters;
    c.sent = c.sentBytes = c.txCompleted = c.received = c.receivedBytes = B;
    t.trackers[0]!.next = t.trackers[0]!.unique = B;
    const r = await t.run(0.3, 300);
    const n = backend.txFrames;
    expect(n).toBeGreaterThan(100);
    expect(r).toMatchObject({ sent: B + n, received: B + n, lost: 0, late: 0, duplicated: 0, bad: 0, sentBytes: B + 64 * n, receivedBytes: B + 64 * n });
    expect([c.txCompleted, t.trackers[0]!.next]).toEqual([B + n, B + n]);
    expect(c.toJSON()).toMatchObject({ sent: B + n, txCompleted: B + n, kicks: c.kicks });
  });

  it('legacy 10-byte header when neither VERSION_1 nor MRG_RXBUF is negotiated', async () => {
    const { backend, device } = await start({ mrg: false, backend: { features: FAKE_FEATURES & ~(1n << 32n) } });
    expect(netHeaderSize(device.features)).toBe(10);
    expect(backend.hdrLen).toBe(10);
    backend.startData('echo');
    const r = await run(device, 'loop', 100);
    expect(r).toMatchObject({ received: r.sent, lost: 0, bad: 0 });
    expect(r.sent).toBeGreaterThan(100);
  });

  it.each([
    ['drop', (r: { lost: number; sent: number }) => expect(r.lost).toBeGreaterThan(r.sent / 20)],
    ['duplicate', (r: { duplicated: number; sent: number }) => expect(r.duplicated).toBeGreaterThan(r.sent / 20)],
    ['corrupt', (r: { bad: number; sent: number }) => expect(r.bad).toBeGreaterThan(r.sent / 20)],
    ['swap', (r: { reordered: number; sent: number }) => expect(r.reordered).toBeGreaterThan(r.sent / 20)],
  ] as [Fault, (r: never) => void][])('counts an injected fault: %s', async (fault, check) => {
    const { backend, device } = await start();
    backend.fault = fault;
    backend.faultEvery = 10;
    backend.startData('echo');
    // A window of half the RX ring: even duplicated frames always find an RX buffer (the
    // scripted back-end drops a frame when the RX ring is empty, which would be real loss).
    const r = await run(device, 'loop', 80, 0.3, { window: 64 });
    expect(r.sent).toBeGreaterThan(100);
    check(r as never);
    // swap holds one frame back until the next arrives: the very last one can stay held.
    if (fault !== 'drop') expect(r.lost).toBeLessThanOrEqual(fault === 'swap' ? 1 : 0);
    if (fault !== 'corrupt') expect(r.bad).toBe(0);
    if (fault !== 'duplicate') expect(r.duplicated).toBe(0);
  });
});

describe('tx and rx', () => {
  it('tx: the back-end consumes exactly what we sent', async () => {
    const { backend, device } = await start();
    backend.startData('sink');
    const r = await run(device, 'tx', 1500);
    expect(r.sent).toBeGreaterThan(100);
    expect(backend.txFrames).toBe(r.sent);
    expect(r.received).toBe(0);
  });

  it('rx: foreign frames are counted, a bad IPv4 header checksum is flagged', async () => {
    const frame = new Uint8Array(64);
    const dv = new DataView(frame.buffer);
    dv.setUint16(12, 0x0800, false);
    frame.set([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
    let sum = 0;
    for (let o = 0; o < 20; o += 2) sum += dv.getUint16(14 + o, false);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    dv.setUint16(24, ~sum & 0xffff, false);
    const { backend, device } = await start();
    backend.sourceFrame = frame;
    backend.startData('source');
    const r = await run(device, 'rx', 64, 0.2);
    expect(r.received).toBeGreaterThan(100);
    expect(r).toMatchObject({ foreign: r.received, foreignBad: 0, bad: 0 });
    backend.stopData();
    const bad = frame.slice();
    bad[20] = bad[20]! ^ 0xff;
    backend.sourceFrame = bad;
    const { backend: b2, device: d2 } = await start();
    b2.sourceFrame = bad;
    b2.startData('source');
    const r2 = await run(d2, 'rx', 64, 0.2);
    expect(r2.foreignBad).toBe(r2.received);
  });

  it('rate limit: about rate x seconds frames', async () => {
    const { backend, device } = await start();
    backend.startData('sink');
    const r = await run(device, 'tx', 64, 0.5, { rate: 2000 });
    // Never more than the budget (rate x elapsed, + one burst); a starved loop catches up in bursts.
    expect(r.sent).toBeLessThanOrEqual(Math.ceil(2000 * r.seconds) + 32);
    // At least most of the nominal 0.5 s budget (a late last wake-up can end the run before it sends what is due).
    expect(r.sent).toBeGreaterThan(600);
  });
});

describe('accounting options', () => {
  it('--no-verify: frames are counted, loss is not claimed', async () => {
    const { backend, device } = await start();
    backend.startData('echo');
    const r = await run(device, 'loop', 64, 0.2, { verify: false });
    expect(r.received).toBe(r.sent);
    expect(r.lost).toBe(0);
    // The window reopens from what was received (no checks): it never stalls.
    expect(r.windowResets).toBe(0);
    expect(r.sent).toBeGreaterThan(128); // more than one window (the RX ring holds 128): it did reopen
  });
});

describe('worker threads (ParallelNetTraffic)', () => {
  it.each([
    ['split', false],
    ['packed', true],
  ])('%s: 3 pairs over 2 workers: every frame back intact, per-pair counters merged', async (_n, packed) => {
    const { backend, device } = await start({ pairs: 3, packed });
    backend.startData('echo');
    const t = new ParallelNetTraffic(device, { mode: 'loop', frameSize: 200 }, { workers: 2 });
    const ticks: number[] = [];
    const r = await t.run(0.5, 1000, { intervalMs: 100, onTick: (p) => ticks.push(p.queues.reduce((a, q) => a + q.sent, 0)) });
    expect(t.workerCount).toBe(2);
    expect(r.sent).toBeGreaterThan(100);
    expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0 });
    expect(r.queues).toHaveLength(3);
    for (const q of r.queues) expect(q.sent).toBeGreaterThan(0);
    expect(t.outcomes.map((o) => o.q)).toEqual([0, 1, 2]);
    expect(t.outcomes.every((o) => o.counters.crossPair === 0)).toBe(true);
    expect(backend.txFrames).toBe(r.sent);
    expect(ticks.some((n) => n > 0)).toBe(true);
    // The device is still usable from the main thread afterwards: stop + close.
    expect((await device.close())?.bases).toHaveLength(6);
  });

  it('stop() ends the workers early', async () => {
    const { backend, device } = await start({ pairs: 2 });
    backend.startData('sink');
    const t = new ParallelNetTraffic(device, { mode: 'tx', frameSize: 64 }, { workers: 2 });
    const t0 = Date.now();
    setTimeout(() => t.stop(), 300);
    const r = await t.run(30, 200);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r.sent).toBe(backend.txFrames);
  });
});
