// The blk request module driven in-process: the guest is virtio's driver-side
// ring (split and packed), the runtime a faithful stand-in (harness.ts).
import { readFileSync, truncateSync } from 'node:fs';
import { createBlkModule } from '@vhost-ts/blk/modules/blk';
import {
  BLK_DWZ_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '@vhost-ts/virtio';
import { afterEach, describe, expect, it } from 'vitest';
import { GuestQueue, Harness, KiB, MiB, TestGuest, complete, patternBytes, tempBacking, type Done, type RingKind } from './harness.js';

const DISK = 8 * MiB;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  h: Harness;
  q: GuestQueue[];
  guest: TestGuest;
  file: string;
}

async function setup(opts: { kind: RingKind; io?: 'sync' | 'async'; queues?: number; extra?: Record<string, string>; disk?: number; eventIdx?: boolean }): Promise<Setup> {
  const disk = opts.disk ?? DISK;
  const b = tempBacking(disk, (buf) => buf.set(patternBytes(0, disk, 0)));
  cleanups.push(() => b.remove());
  const guest = new TestGuest(48 * MiB);
  const n = opts.queues ?? 1;
  const q = Array.from({ length: n }, () => new GuestQueue(guest, { kind: opts.kind, size: 128, eventIdx: opts.eventIdx ?? true }));
  const h = new Harness(guest, { path: b.file, io: opts.io ?? 'sync', serial: 'vhost-ts-serial-0001', ...(opts.extra ?? {}) }, n);
  await h.load(createBlkModule);
  cleanups.push(() => h.close());
  q.forEach((gq, i) => h.startRing(i, gq.deviceRing()));
  return { h, q, guest, file: b.file };
}

/** Submits one request, runs until it completes, returns it. */
async function one(s: Setup, add: (q: GuestQueue) => number, qi = 0): Promise<Done> {
  const token = add(s.q[qi]!);
  expect(token).toBeGreaterThanOrEqual(0);
  const done = new Map<number, Done>();
  await complete(s.h, s.q, done, [token]);
  return done.get(token)!;
}

describe.each(['split', 'packed'] as const)('blk module, %s ring', (kind) => {
  describe.each(['sync', 'async'] as const)('io=%s', (io) => {
    it('writes then reads back identical data across request sizes, segment counts and indirect tables, 16 in flight', async () => {
      const s = await setup({ kind, io });
      const sizes = [512, 4 * KiB, 12 * KiB, 64 * KiB, 256 * KiB, 1 * MiB];
      let gen = 1;
      for (const size of sizes) {
        for (const shape of [{ segs: 1 }, { segs: 3 }, { segs: 4, indirect: true }]) {
          const cp = s.guest.checkpoint();
          const sectors = size / 512;
          // 16 writes at distinct, spread-out offsets, all in flight at once.
          const starts = Array.from({ length: 16 }, (_, i) => ((i * 977 + gen * 131) % ((DISK - size) / 4096)) * 8);
          const uniq = [...new Set(starts)];
          const done = new Map<number, Done>();
          const wTokens = uniq.map((sec) => s.q[0]!.addBlk(VIRTIO_BLK_T_OUT, sec, { data: patternBytes(sec, size, gen), ...shape }));
          expect(wTokens.every((t) => t >= 0)).toBe(true);
          await complete(s.h, s.q, done, wTokens);
          for (const t of wTokens) {
            expect(done.get(t)!.status).toBe(VIRTIO_BLK_S_OK);
            expect(done.get(t)!.len).toBe(1);
          }
          const rTokens = uniq.map((sec) => s.q[0]!.addBlk(VIRTIO_BLK_T_IN, sec, { inLen: size, ...shape }));
          await complete(s.h, s.q, done, rTokens);
          uniq.forEach((sec, i) => {
            const d = done.get(rTokens[i]!)!;
            expect(d.status).toBe(VIRTIO_BLK_S_OK);
            expect(d.len).toBe(size + 1);
            expect(Buffer.from(d.written.subarray(0, size)).equals(Buffer.from(patternBytes(sec, size, gen))), `read of ${sectors} sectors at ${sec}`).toBe(true);
          });
          // The bytes are in the backing file, where they belong.
          const file = readFileSync(s.file);
          for (const sec of uniq) expect(Buffer.from(file.subarray(sec * 512, sec * 512 + size)).equals(Buffer.from(patternBytes(sec, size, gen)))).toBe(true);
          s.guest.rewind(cp);
          gen++;
        }
      }
    });

    it('FLUSH, GET_ID, DISCARD and WRITE_ZEROES with their used lengths', async () => {
      const s = await setup({ kind, io });
      const flush = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_FLUSH, 0));
      expect([flush.status, flush.len]).toEqual([VIRTIO_BLK_S_OK, 1]);
      const id = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 }));
      expect([id.status, id.len]).toEqual([VIRTIO_BLK_S_OK, 21]);
      expect(Buffer.from(id.written.subarray(0, 20)).toString('latin1')).toBe('vhost-ts-serial-0001');
      // Write zeroes over 40 sectors at 1000: reads back zeros, neighbours untouched.
      const seg = new Uint8Array(BLK_DWZ_SIZE);
      const dv = new DataView(seg.buffer);
      dv.setUint32(0, 1000, true);
      dv.setUint32(8, 40, true);
      const wz = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg }));
      expect([wz.status, wz.len]).toEqual([VIRTIO_BLK_S_OK, 1]);
      const rd = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, 999, { inLen: 42 * 512 }));
      expect(rd.status).toBe(VIRTIO_BLK_S_OK);
      expect(Buffer.from(rd.written.subarray(0, 512)).equals(Buffer.from(patternBytes(999, 512, 0)))).toBe(true);
      expect(rd.written.subarray(512, 41 * 512).every((b) => b === 0)).toBe(true);
      expect(Buffer.from(rd.written.subarray(41 * 512, 42 * 512)).equals(Buffer.from(patternBytes(1040, 512, 0)))).toBe(true);
      // Write zeroes with UNMAP allowed is fine too (the device zeroes, it never deallocates).
      dv.setUint32(12, 1, true);
      expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg }))).status).toBe(VIRTIO_BLK_S_OK);
      // Discard: validated, OK (a hint: nothing to deallocate without fallocate).
      dv.setUint32(12, 0, true);
      const dc = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_DISCARD, 0, { data: seg }));
      expect([dc.status, dc.len]).toEqual([VIRTIO_BLK_S_OK, 1]);
    });
  });
});

describe('blk module: malformed and refused requests get the right status, and the device keeps running', () => {
  function seg(sector: number, num: number, flags = 0): Uint8Array {
    const b = new Uint8Array(BLK_DWZ_SIZE);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, sector >>> 0, true);
    dv.setUint32(4, Math.floor(sector / 2 ** 32), true);
    dv.setUint32(8, num, true);
    dv.setUint32(12, flags, true);
    return b;
  }

  it.each(['split', 'packed'] as const)('%s ring: every error case, each followed by a good request', async (kind) => {
    const s = await setup({ kind, io: 'sync', extra: { blockSize: '4096' } });
    const lastSector = DISK / 512;
    const cases: { name: string; add: (q: GuestQueue) => number; status: number; len: number }[] = [
      { name: 'read beyond capacity', add: (q) => q.addBlk(VIRTIO_BLK_T_IN, lastSector, { inLen: 4096 }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'read crossing the end', add: (q) => q.addBlk(VIRTIO_BLK_T_IN, lastSector - 8, { inLen: 8192 }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'write beyond capacity', add: (q) => q.addBlk(VIRTIO_BLK_T_OUT, lastSector + 8, { data: new Uint8Array(4096) }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'sector beyond 2^53', add: (q) => q.addBlk(VIRTIO_BLK_T_IN, 2 ** 60, { inLen: 4096 }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'sector not aligned to the 4 KiB block', add: (q) => q.addBlk(VIRTIO_BLK_T_IN, 3, { inLen: 4096 }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'length not a multiple of the block', add: (q) => q.addBlk(VIRTIO_BLK_T_OUT, 8, { data: new Uint8Array(512) }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'length not a multiple of 512', add: (q) => q.addBlk(VIRTIO_BLK_T_IN, 8, { inLen: 100 }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      {
        name: 'status buffer too short (data and status share 4096 bytes)',
        add: (q) => q.addBlk(VIRTIO_BLK_T_IN, 8, { inLen: 4095, statusLen: 1 }),
        status: VIRTIO_BLK_S_IOERR,
        len: 1,
      },
      { name: 'unknown request type', add: (q) => q.addBlk(77, 0, { inLen: 512 }), status: VIRTIO_BLK_S_UNSUPP, len: 1 },
      {
        name: 'header in a device-writable buffer',
        add: (q) => q.addRaw([{ len: 16, writable: true }, { len: 1, writable: true }]),
        status: VIRTIO_BLK_S_IOERR,
        len: 1,
      },
      {
        name: 'header too short (8 readable bytes)',
        add: (q) => q.addRaw([{ len: 8, writable: false, data: new Uint8Array(8) }, { len: 1, writable: true }]),
        status: VIRTIO_BLK_S_IOERR,
        len: 1,
      },
      { name: 'no device-writable byte at all', add: (q) => q.addRaw([{ len: 16, writable: false, data: new Uint8Array(16) }]), status: -1, len: 0 },
      { name: 'discard with UNMAP', add: (q) => q.addBlk(VIRTIO_BLK_T_DISCARD, 0, { data: seg(8, 8, 1) }), status: VIRTIO_BLK_S_UNSUPP, len: 1 },
      { name: 'write zeroes with an unknown flag', add: (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg(8, 8, 2) }), status: VIRTIO_BLK_S_UNSUPP, len: 1 },
      { name: 'write zeroes beyond capacity', add: (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg(lastSector - 8, 16) }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      { name: 'write zeroes misaligned', add: (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg(4, 8) }), status: VIRTIO_BLK_S_IOERR, len: 1 },
      {
        name: 'write zeroes with two segments (max 1)',
        add: (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: new Uint8Array([...seg(8, 8), ...seg(64, 8)]) }),
        status: VIRTIO_BLK_S_UNSUPP,
        len: 1,
      },
      {
        name: 'write zeroes of more sectors than max_write_zeroes_sectors',
        add: (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg(0, 40000) }),
        status: VIRTIO_BLK_S_IOERR,
        len: 1,
      },
      { name: 'discard payload not a whole segment', add: (q) => q.addBlk(VIRTIO_BLK_T_DISCARD, 0, { data: new Uint8Array(10) }), status: VIRTIO_BLK_S_IOERR, len: 1 },
    ];
    for (const [i, c] of cases.entries()) {
      const d = await one(s, c.add);
      expect({ name: c.name, status: d.status, len: d.len }).toEqual({ name: c.name, status: c.status, len: c.len });
      // The device keeps serving: a good write and read right after.
      const data = patternBytes(64 + 8 * i, 4096, 9);
      expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_OUT, 64 + 8 * i, { data }))).status).toBe(VIRTIO_BLK_S_OK);
      const r = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, 64 + 8 * i, { inLen: 4096 }));
      expect(r.status, c.name).toBe(VIRTIO_BLK_S_OK);
      expect(Buffer.from(r.written.subarray(0, 4096)).equals(Buffer.from(data))).toBe(true);
    }
    // Nothing failed the module itself.
    expect(s.h.rings[0]!.device!.broken).toBe(false);
    const stats = s.h.mod!.stats!();
    expect(stats['vring0.ioErrors']).toBe(cases.filter((c) => c.status === VIRTIO_BLK_S_IOERR).length);
    expect(stats['vring0.unsupported']).toBe(cases.filter((c) => c.status === VIRTIO_BLK_S_UNSUPP).length);
    expect(stats['vring0.malformed']).toBe(1);
  });

  it('a read-only device refuses writes, write zeroes and discard with IOERR; reads and flush work', async () => {
    const s = await setup({ kind: 'split', extra: { readOnly: '1' } });
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_OUT, 0, { data: new Uint8Array(512) }))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: seg(0, 8) }))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_DISCARD, 0, { data: seg(0, 8) }))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_FLUSH, 0))).status).toBe(VIRTIO_BLK_S_OK);
    const r = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, 0, { inLen: 512 }));
    expect(r.status).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(r.written.subarray(0, 512)).equals(Buffer.from(patternBytes(0, 512, 0)))).toBe(true);
    expect(Buffer.from(readFileSync(s.file).subarray(0, 512)).equals(Buffer.from(patternBytes(0, 512, 0)))).toBe(true);
  });

  it('a grown backing file is served once the module is told the new capacity', async () => {
    const s = await setup({ kind: 'split', disk: 1 * MiB });
    const beyond = (1 * MiB) / 512;
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, beyond, { inLen: 512 }))).status).toBe(VIRTIO_BLK_S_IOERR);
    truncateSync(s.file, 2 * MiB);
    expect(() => s.h.mod!.configure!({ capacity: String(4 * MiB) })).toThrow(/exceeds/);
    await s.h.mod!.configure!({ capacity: String(2 * MiB) });
    const data = patternBytes(beyond, 4096, 3);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_OUT, beyond, { data }))).status).toBe(VIRTIO_BLK_S_OK);
    const r = await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, beyond, { inLen: 4096 }));
    expect(Buffer.from(r.written.subarray(0, 4096)).equals(Buffer.from(data))).toBe(true);
  });

  it.each(['sync', 'async'] as const)('io=%s: reads into guest memory are dirty-logged (live migration)', async (io) => {
    const s = await setup({ kind: 'split', io });
    const log = s.guest.enableDirtyLog();
    const token = s.q[0]!.addBlk(VIRTIO_BLK_T_IN, 0, { inLen: 64 * KiB });
    const gpa = s.q[0]!.outstanding.get(token)!.bufs[1]!.gpa;
    const done = new Map<number, Done>();
    await complete(s.h, s.q, done, [token]);
    expect(done.get(token)!.status).toBe(VIRTIO_BLK_S_OK);
    for (let at = gpa; at < gpa + 64 * KiB; at += 4096) expect(log.isDirty(at), `page of ${at}`).toBe(true);
    expect(log.isDirty(gpa + 64 * KiB + 8192)).toBe(false);
  });

  it('counts past 2^32 exactly (the ring counters are float64 slots, not number fields)', async () => {
    const s = await setup({ kind: 'split' });
    const engine = (s.h.mod as unknown as { engine: { counterSlots(r: unknown): Float64Array | null } }).engine;
    const B = 2 ** 40;
    engine.counterSlots(s.h.rings[0]!)!.fill(B);
    const data = patternBytes(0, 8192, 4);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_OUT, 0, { data }))).status).toBe(VIRTIO_BLK_S_OK);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, 0, { inLen: 8192 }))).status).toBe(VIRTIO_BLK_S_OK);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_FLUSH, 0))).status).toBe(VIRTIO_BLK_S_OK);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 }))).status).toBe(VIRTIO_BLK_S_OK);
    expect((await one(s, (q) => q.addBlk(77, 0, { inLen: 512 }))).status).toBe(VIRTIO_BLK_S_UNSUPP);
    expect((await one(s, (q) => q.addBlk(VIRTIO_BLK_T_IN, DISK / 512, { inLen: 512 }))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await one(s, (q) => q.addRaw([{ len: 16, writable: false, data: new Uint8Array(16) }]))).len).toBe(0);
    expect(s.h.mod!.stats!()).toMatchObject({
      'vring0.requests': B + 7,
      'vring0.writes': B + 1,
      'vring0.bytesWritten': B + 8192,
      'vring0.reads': B + 1,
      'vring0.bytesRead': B + 8192,
      'vring0.flushes': B + 1,
      'vring0.others': B + 1,
      'vring0.unsupported': B + 1,
      'vring0.ioErrors': B + 1,
      'vring0.malformed': B + 1,
      'vring0.resubmitted': B,
      'vring0.dropped': B,
      'vring0.inflight': 0,
      'vring0.maxInflight': 1,
    });
  });

  it('multiqueue: one module serves two rings independently', async () => {
    const s = await setup({ kind: 'split', queues: 2 });
    const done = new Map<number, Done>();
    const a = s.q[0]!.addBlk(VIRTIO_BLK_T_OUT, 0, { data: patternBytes(0, 8192, 5) });
    const b = s.q[1]!.addBlk(VIRTIO_BLK_T_OUT, 16, { data: patternBytes(16, 8192, 5) });
    await complete(s.h, s.q, done, [a, b]);
    const ra = s.q[1]!.addBlk(VIRTIO_BLK_T_IN, 0, { inLen: 8192 });
    const rb = s.q[0]!.addBlk(VIRTIO_BLK_T_IN, 16, { inLen: 8192 });
    await complete(s.h, s.q, done, [ra, rb]);
    expect(Buffer.from(done.get(ra)!.written.subarray(0, 8192)).equals(Buffer.from(patternBytes(0, 8192, 5)))).toBe(true);
    expect(Buffer.from(done.get(rb)!.written.subarray(0, 8192)).equals(Buffer.from(patternBytes(16, 8192, 5)))).toBe(true);
    const st = s.h.mod!.stats!();
    expect([st['vring0.writes'], st['vring0.reads'], st['vring1.writes'], st['vring1.reads']]).toEqual([1, 1, 1, 1]);
  });
});
