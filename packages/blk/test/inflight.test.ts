// Inflight tracking (INFLIGHT_SHMFD): the bookkeeping of SplitInflightQueue, and
// the module's crash/restart behaviour: a back-end that dies with requests
// popped, completed-but-unpublished, or published-but-unsettled leaves an area
// from which a new back-end resubmits exactly what the guest has not seen
// completed, in submission order, once.
import { readFileSync } from 'node:fs';
import { SplitInflightQueue, type InflightAreaSpec } from '@vhost-ts/blk';
import { createBlkModule } from '@vhost-ts/blk/modules/blk';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, inflightQueueBytes } from '@vhost-ts/virtio';
import { afterEach, describe, expect, it } from 'vitest';
import { GuestQueue, Harness, MiB, TestGuest, complete, patternBytes, tempBacking, type Done } from './harness.js';

describe('SplitInflightQueue bookkeeping', () => {
  const SIZE = 16;
  function fresh(): SplitInflightQueue {
    const q = new SplitInflightQueue(new SharedArrayBuffer(inflightQueueBytes(SIZE) * 2), inflightQueueBytes(SIZE), SIZE);
    expect(q.recover(0).fresh).toBe(true);
    return q;
  }

  it('initialises a fresh area: version 1, desc_num, used_idx', () => {
    const q = new SplitInflightQueue(new SharedArrayBuffer(inflightQueueBytes(SIZE)), 0, SIZE);
    expect(q.version).toBe(0);
    const r = q.recover(7);
    expect(r).toMatchObject({ fresh: true, heads: [], lastAvailIdx: 7 });
    expect([q.version, q.descNum, q.storedUsedIdx]).toEqual([1, SIZE, 7]);
  });

  it('pop marks with increasing counters; completion clears only once the used index is published', () => {
    const q = fresh();
    for (const h of [5, 2, 9]) q.markPopped(h);
    expect(q.inflightHeads()).toEqual([2, 5, 9]);
    expect([q.counterOf(5), q.counterOf(2), q.counterOf(9)]).toEqual([1, 2, 3]);
    // 2 completes: staged, not yet published (used->idx still 0).
    q.markCompleting(2, 0);
    expect(q.isInflight(2)).toBe(true);
    expect([q.pending, q.lastBatchHead, q.storedUsedIdx]).toEqual([1, 2, 0]);
    // Published: the next settle clears it and records used_idx.
    q.settle(1);
    expect(q.isInflight(2)).toBe(false);
    expect([q.pending, q.storedUsedIdx]).toEqual([0, 1]);
    // A batch of two (9 then 5), published by one store.
    q.markCompleting(9, 1);
    q.markCompleting(5, 1);
    expect([q.pending, q.lastBatchHead]).toEqual([2, 9]);
    q.settle(3);
    expect(q.inflightHeads()).toEqual([]);
    expect(q.storedUsedIdx).toBe(3);
  });

  it('recovery after a crash with a batch published but not settled: nothing is resubmitted', () => {
    const q = fresh();
    for (const h of [3, 4, 5]) q.markPopped(h);
    for (const h of [4, 3, 5]) q.markCompleting(h, 0);
    // Crash: used->idx was published as 3, the flags were never cleared.
    const r = q.recover(3);
    expect(r).toMatchObject({ fresh: false, heads: [], lastAvailIdx: 3, clearedBatch: 3 });
    expect(q.inflightHeads()).toEqual([]);
  });

  it('recovery with a batch partly published: the unpublished tail is resubmitted', () => {
    const q = fresh();
    for (const h of [3, 4, 5, 6]) q.markPopped(h);
    for (const h of [6, 4, 5]) q.markCompleting(h, 0); // 3 still in flight
    // The runtime published only the first two entries of the list (6, 4) before dying.
    const r = q.recover(2);
    expect(r.heads).toEqual([3, 5]); // counter order: 3 was popped before 5
    expect(r.lastAvailIdx).toBe(4);
    expect(r.clearedBatch).toBe(2);
  });

  it('recovery with a batch staged but not published: all of it goes back, in pop order (not index order)', () => {
    const q = fresh();
    for (const h of [12, 1, 7, 3]) q.markPopped(h);
    for (const h of [1, 12]) q.markCompleting(h, 0);
    const r = q.recover(0);
    expect(r.heads).toEqual([12, 1, 7, 3]);
    expect(r.lastAvailIdx).toBe(4);
    // Counting resumes after the highest counter.
    q.markPopped(9);
    expect(q.counterOf(9)).toBe(5);
  });

  it('counters past 2^32 stay exact (the last counter is a float64 cell, not a number field)', () => {
    const q = fresh();
    q.markPopped(4);
    // A previous back-end left head 4 in flight with counter 2^40 (u64: lo 0, hi 2^8).
    const dv = new DataView((q as unknown as { u8: Uint8Array }).u8.buffer, q.base);
    dv.setUint32(16 + 4 * 16 + 8, 0, true);
    dv.setUint32(16 + 4 * 16 + 12, 2 ** 8, true);
    expect(q.recover(0).heads).toEqual([4]);
    expect(q.lastCounter).toBe(2 ** 40);
    for (const h of [7, 9]) q.markPopped(h);
    expect([q.counterOf(7), q.counterOf(9), q.lastCounter]).toEqual([2 ** 40 + 1, 2 ** 40 + 2, 2 ** 40 + 2]);
  });

  it('a crash in the middle of a settle (flags cleared, used_idx not yet written) recovers the same way', () => {
    const q = fresh();
    for (const h of [0, 1, 2]) q.markPopped(h);
    for (const h of [0, 1, 2]) q.markCompleting(h, 0);
    const raw = new SplitInflightQueue((q as unknown as { u8: Uint8Array }).u8.buffer as SharedArrayBuffer, q.base, SIZE);
    // What settle(3) does first: clear the flags of 0 and 1 ... then dies before used_idx.
    (raw as unknown as { u8: Uint8Array }).u8[16 + 0 * 16] = 0;
    (raw as unknown as { u8: Uint8Array }).u8[16 + 1 * 16] = 0;
    const r = raw.recover(3);
    expect(r).toMatchObject({ heads: [], lastAvailIdx: 3 });
  });

  it('an area of another geometry or version is reset, not trusted', () => {
    const q = fresh();
    q.markPopped(1);
    const dv = new DataView((q as unknown as { u8: Uint8Array }).u8.buffer, q.base);
    dv.setUint16(10, SIZE / 2, true); // desc_num
    expect(q.recover(0)).toMatchObject({ fresh: true, heads: [] });
    expect(q.descNum).toBe(SIZE);
    expect(q.inflightHeads()).toEqual([]);
    dv.setUint16(8, 9, true); // version
    expect(q.recover(0).reset).toMatch(/version 9/);
  });

  it('forVring refuses areas it cannot track', () => {
    const sab = new SharedArrayBuffer(inflightQueueBytes(SIZE) * 2);
    const base: InflightAreaSpec = { sab, offset: 0, queueRegionSize: inflightQueueBytes(SIZE), numQueues: 2, queueSize: SIZE, packed: false };
    expect(SplitInflightQueue.forVring(base, 1, SIZE)).toBeInstanceOf(SplitInflightQueue);
    expect(SplitInflightQueue.forVring(base, 2, SIZE)).toMatch(/beyond/);
    expect(SplitInflightQueue.forVring(base, 0, 32)).toMatch(/queue size/);
    expect(SplitInflightQueue.forVring({ ...base, packed: true }, 0, SIZE)).toMatch(/packed/);
  });
});

describe('blk module: crash and restart with the inflight area', () => {
  const SIZE = 64;
  const DISK = 4 * MiB;
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  interface World {
    guest: TestGuest;
    gq: GuestQueue;
    area: InflightAreaSpec;
    file: string;
  }

  function world(): World {
    const b = tempBacking(DISK);
    cleanups.push(() => b.remove());
    const guest = new TestGuest(16 * MiB);
    const gq = new GuestQueue(guest, { kind: 'split', size: SIZE, eventIdx: true });
    const area: InflightAreaSpec = {
      sab: new SharedArrayBuffer(inflightQueueBytes(SIZE)),
      offset: 0,
      queueRegionSize: inflightQueueBytes(SIZE),
      numQueues: 1,
      queueSize: SIZE,
      packed: false,
    };
    return { guest, gq, area, file: b.file };
  }

  /** A back-end process: a module instance with the area in its context, ring started at base = used->idx (QEMU after a crash). */
  async function backend(w: World, io: 'sync' | 'async', opts: { viaRpc?: boolean } = {}): Promise<Harness> {
    const h = new Harness(w.guest, { path: w.file, io, ...(opts.viaRpc === true ? { inflight: 'wait' } : {}) }, 1);
    if (opts.viaRpc !== true) Object.defineProperty(h, 'inflight', { value: w.area, enumerable: true });
    await h.load(createBlkModule);
    cleanups.push(() => h.close());
    h.startRing(0, w.gq.deviceRing(w.gq.usedIdx()));
    return h;
  }

  /** Heads of the warm-up make later heads non-monotonic (the driver's free list reuses them LIFO). */
  async function warmUp(w: World, h: Harness, done: Map<number, Done>): Promise<void> {
    const t = [0, 1, 2, 3].map((i) => w.gq.addBlk(VIRTIO_BLK_T_IN, i * 8, { inLen: 4096, segs: 2 }));
    await complete(h, [w.gq], done, t);
  }

  function writeAll(w: World, n: number, gen: number): number[] {
    const tokens = Array.from({ length: n }, (_, i) => w.gq.addBlk(VIRTIO_BLK_T_OUT, 64 + i * 16, { data: patternBytes(64 + i * 16, 8192, gen), segs: 2, indirect: true }));
    expect(tokens.every((t) => t >= 0)).toBe(true);
    return tokens;
  }

  /** What a back-end starting now would resubmit (recovery on a copy of the area). */
  function wouldResubmit(w: World): number[] {
    const copy = new SharedArrayBuffer(w.area.sab.byteLength);
    new Uint8Array(copy).set(new Uint8Array(w.area.sab));
    return new SplitInflightQueue(copy, 0, SIZE).recover(w.gq.usedIdx()).heads;
  }

  function checkDisk(w: World, n: number, gen: number): void {
    const disk = readFileSync(w.file);
    for (let i = 0; i < n; i++) {
      const sec = 64 + i * 16;
      expect(Buffer.from(disk.subarray(sec * 512, sec * 512 + 8192)).equals(Buffer.from(patternBytes(sec, 8192, gen))), `sector ${sec}`).toBe(true);
    }
  }

  it('sync I/O, crash between staging used entries and publishing them: the burst is resubmitted once, in pop order', async () => {
    const w = world();
    const done = new Map<number, Done>();
    const a = await backend(w, 'sync');
    await warmUp(w, a, done);
    const tokens = writeAll(w, 24, 1);
    w.gq.publish();
    const heads = tokens.map((t) => w.gq.outstanding.get(t)!.head);
    a.holdFlush = true;
    expect(a.step(10)).toBe(10); // 10 requests served, their used entries staged, never published
    await a.crash([w.guest.sab, w.area.sab]);
    expect(w.gq.harvest(done)).toBe(0);

    const b = await backend(w, 'sync');
    const q = (b.mod as unknown as { engine: { inflightOf(r: unknown): SplitInflightQueue | null } }).engine.inflightOf(b.rings[0]!)!;
    expect(q).not.toBeNull();
    expect(b.rings[0]!.mode).toBe('manual');
    const order0 = w.gq.order.length;
    await complete(b, [w.gq], done, tokens);
    // Every request exactly once (harvest throws on a second completion), OK, data on disk.
    for (const t of tokens) expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
    checkDisk(w, 24, 1);
    // The ten resubmitted ones came back first, in pop order; their heads are not in index order.
    expect(w.gq.order.slice(order0, order0 + 10)).toEqual(tokens.slice(0, 10));
    expect([...heads.slice(0, 10)].sort((x, y) => x - y)).not.toEqual(heads.slice(0, 10));
    expect(b.mod!.stats!()['vring0.resubmitted']).toBe(10);
    expect(b.rings[0]!.mode).toBe('burst');
    // The last batch is settled lazily, but a crash now would resubmit nothing.
    expect(q.pending).toBeGreaterThan(0);
    expect(wouldResubmit(w)).toEqual([]);
  });

  it('sync I/O, crash after publishing but before the flags were cleared: nothing is completed twice', async () => {
    const w = world();
    const done = new Map<number, Done>();
    const a = await backend(w, 'sync');
    const tokens = writeAll(w, 24, 2);
    w.gq.publish();
    expect(a.step(10)).toBe(10); // published (used->idx = 10), inflight flags still set until the next settle
    await a.crash([w.guest.sab, w.area.sab]);
    expect(w.gq.harvest(done)).toBe(10);

    const b = await backend(w, 'sync');
    expect(b.rings[0]!.mode).toBe('burst');
    await complete(b, [w.gq], done, tokens);
    for (const t of tokens) expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
    checkDisk(w, 24, 2);
    expect(b.mod!.stats!()['vring0.resubmitted'] ?? 0).toBe(0);
    expect(wouldResubmit(w)).toEqual([]);
  });

  it('async I/O, crash with every request in flight: all resubmitted in pop order, reads return the right data', async () => {
    const w = world();
    const done = new Map<number, Done>();
    const a = await backend(w, 'async');
    await warmUp(w, a, done);
    // Writes first (completed), then reads and more writes in flight at the crash.
    const first = writeAll(w, 8, 3);
    await complete(a, [w.gq], done, first);
    const reads = Array.from({ length: 8 }, (_, i) => w.gq.addBlk(VIRTIO_BLK_T_IN, 64 + i * 16, { inLen: 8192, segs: 2 }));
    const writes = Array.from({ length: 8 }, (_, i) => w.gq.addBlk(VIRTIO_BLK_T_OUT, 1024 + i * 16, { data: patternBytes(1024 + i * 16, 8192, 4) }));
    w.gq.publish();
    expect(a.step()).toBe(16); // all popped and issued; no callback has run yet
    await a.crash([w.guest.sab, w.area.sab]);
    expect(w.gq.harvest(done)).toBe(0);

    // The new back-end may use the other I/O mode: the area format is the same.
    const b = await backend(w, 'sync');
    const order0 = w.gq.order.length;
    await complete(b, [w.gq], done, [...reads, ...writes]);
    expect(w.gq.order.slice(order0)).toEqual([...reads, ...writes]);
    reads.forEach((t, i) => {
      expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
      expect(Buffer.from(done.get(t)!.written.subarray(0, 8192)).equals(Buffer.from(patternBytes(64 + i * 16, 8192, 3)))).toBe(true);
    });
    const disk = readFileSync(w.file);
    for (let i = 0; i < 8; i++) {
      const sec = 1024 + i * 16;
      expect(Buffer.from(disk.subarray(sec * 512, sec * 512 + 8192)).equals(Buffer.from(patternBytes(sec, 8192, 4)))).toBe(true);
    }
    expect(b.mod!.stats!()['vring0.resubmitted']).toBe(16);
  });

  it('inflight=wait holds the rings until setInflight, so the area arrives before the first pop', async () => {
    const w = world();
    const done = new Map<number, Done>();
    const a = await backend(w, 'sync');
    const tokens = writeAll(w, 6, 5);
    w.gq.publish();
    a.holdFlush = true;
    expect(a.step()).toBe(6);
    await a.crash([w.guest.sab, w.area.sab]);

    const b = await backend(w, 'async', { viaRpc: true });
    expect(b.rings[0]!.mode).toBe('manual');
    expect(b.step()).toBe(0); // held: nothing popped (popping at base = used->idx would redo completed entries)
    (b.mod!.rpc!.setInflight as (a: InflightAreaSpec) => void)(w.area);
    await complete(b, [w.gq], done, tokens);
    for (const t of tokens) expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
    checkDisk(w, 6, 5);
    expect(b.mod!.stats!()['vring0.resubmitted']).toBe(6);
  });

  it('a clean stop and restart in the same back-end leaves nothing in flight', async () => {
    const w = world();
    const done = new Map<number, Done>();
    const a = await backend(w, 'async');
    const tokens = writeAll(w, 12, 6);
    await complete(a, [w.gq], done, tokens);
    a.stopRing(0);
    const q = new SplitInflightQueue(w.area.sab, 0, SIZE);
    expect(q.inflightHeads()).toEqual([]);
    expect(q.storedUsedIdx).toBe(w.gq.usedIdx());
    a.startRing(0, w.gq.deviceRing(w.gq.usedIdx()));
    const more = writeAll(w, 4, 7);
    await complete(a, [w.gq], done, more);
    expect(a.mod!.stats!()['vring0.resubmitted'] ?? 0).toBe(0);
  });

  it('packed rings are served untracked, with a warning', async () => {
    const b = tempBacking(DISK);
    cleanups.push(() => b.remove());
    const guest = new TestGuest(8 * MiB);
    const gq = new GuestQueue(guest, { kind: 'packed', size: SIZE });
    const h = new Harness(guest, { path: b.file }, 1);
    Object.defineProperty(h, 'inflight', { value: { sab: new SharedArrayBuffer(4096), offset: 0, queueRegionSize: 4096, numQueues: 1, queueSize: SIZE, packed: true }, enumerable: true });
    await h.load(createBlkModule);
    cleanups.push(() => h.close());
    h.startRing(0, gq.deviceRing());
    expect(h.warnings.join('\n')).toMatch(/split rings only/);
    const done = new Map<number, Done>();
    const t = gq.addBlk(VIRTIO_BLK_T_OUT, 0, { data: patternBytes(0, 4096, 1) });
    await complete(h, [gq], done, [t]);
    expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
  });
});
