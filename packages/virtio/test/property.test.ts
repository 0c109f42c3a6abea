import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Chain,
  PackedDeviceRing,
  PackedDriverRing,
  SplitDeviceRing,
  SplitDriverRing,
  createUsedBuffer,
  type DeviceRing,
  type DriverRing,
} from '../src/index.js';
import { HIGH, MID2, makeMemory, packedLayout, splitLayout } from './helpers.js';

/**
 * Generated op sequences between a driver ring and a device ring sharing guest
 * memory: the driver adds chains of random shape (direct or indirect, some
 * crossing the MID1/MID2 region boundary), the device pops some, completes
 * them out of order with random lengths, both sides toggle notifications.
 * Checks: every chain comes back exactly once with its token, length and data;
 * the device sees exactly what the driver posted; no notification is lost
 * (after a side re-arms and finds nothing, the other side's next check says notify).
 */

const SLOT = 16 * 1024; // per-token data area in HIGH
const SLOTS = 48;
const CROSS = MID2.gpa - 37; // a readable segment crossing MID1 -> MID2

type Op =
  | { t: 'add'; out: number; inn: number; lens: number[]; indirect: boolean; cross: boolean }
  | { t: 'publish' }
  | { t: 'kick' }
  | { t: 'pop'; n: number }
  | { t: 'push'; pick: number; frac: number }
  | { t: 'flush' }
  | { t: 'notify' }
  | { t: 'used'; n: number }
  | { t: 'devNotify'; on: boolean }
  | { t: 'drvCb'; on: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('add' as const),
      out: fc.integer({ min: 0, max: 3 }),
      inn: fc.integer({ min: 0, max: 3 }),
      lens: fc.array(fc.integer({ min: 1, max: 2000 }), { minLength: 6, maxLength: 6 }),
      indirect: fc.boolean(),
      cross: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ t: 'publish' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'kick' as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('push' as const), pick: fc.nat(), frac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'flush' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'notify' as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('used' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('devNotify' as const), on: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('drvCb' as const), on: fc.boolean() }) },
);

function pattern(token: number, i: number): number {
  return (token * 131 + i * 17 + 5) & 0xff;
}

interface Posted {
  token: number;
  id: number;
  readable: number;
  writable: number;
  crossBytes: number;
}

function run(kind: 'split' | 'packed', size: number, eventIdx: boolean, start: number, ops: Op[]): void {
  const { mem, checkCanaries } = makeMemory();
  const pool = { gpa: MID2.gpa + 0x40000, maxEntries: 6 };
  let drv: DriverRing<number>;
  let dev: DeviceRing;
  if (kind === 'split') {
    const cfg = splitLayout(size, eventIdx);
    drv = new SplitDriverRing<number>(mem, cfg, { startIdx: start, indirectPool: pool });
    dev = new SplitDeviceRing(mem, cfg, { lastAvailIdx: start });
  } else {
    const cfg = packedLayout(size, eventIdx);
    drv = new PackedDriverRing<number>(mem, cfg, { indirectPool: pool });
    dev = new PackedDeviceRing(mem, cfg, { vringBase: drv.vringBase });
  }
  const chains = Array.from({ length: 8 }, () => new Chain(2));
  const scratch = new Uint8Array(6 * 2000);
  const used = createUsedBuffer<number>();

  let nextToken = 1;
  const posted = new Map<number, Posted>(); // token -> posted (driver view)
  const byId = new Map<number, Posted>(); // outstanding id -> posted
  const unpublished = new Set<number>(); // tokens added but not published
  const held: Posted[] = []; // popped by the device, not pushed
  const pushedLen = new Map<number, number>(); // token -> len pushed
  const flushed = new Set<number>(); // tokens whose used entry is published
  const stagedTokens: number[] = [];
  const returned = new Set<number>();
  let devArmed = false;
  let drvArmed = false;
  let publishedAfterArm = false;
  let flushedAfterArm = false;

  const regionOf = (token: number) => HIGH.gpa + (token % SLOTS) * SLOT;

  const add = (op: Extract<Op, { t: 'add' }>): void => {
    let out = op.out;
    let inn = op.inn;
    if (out + inn === 0) out = 1;
    // "A driver MUST NOT create a descriptor chain longer than the Queue Size" (indirect too).
    while (out + inn > size) {
      if (inn > 0) inn--;
      else out--;
    }
    const total = out + inn;
    const token = nextToken;
    // Keep data areas of outstanding tokens disjoint.
    for (const p of posted.values()) if (p.token % SLOTS === token % SLOTS) return;
    const base = regionOf(token);
    const addrs: number[] = [];
    const lens: number[] = [];
    let off = 0;
    let readable = 0;
    let writable = 0;
    let crossBytes = 0;
    for (let k = 0; k < total; k++) {
      const len = op.lens[k]!;
      if (k === 0 && op.cross && out > 0) {
        addrs.push(CROSS);
        lens.push(len);
        crossBytes = len;
        readable += len;
        continue;
      }
      addrs.push(base + off);
      lens.push(len);
      if (k < out) {
        for (let i = 0; i < len; i++) scratch[i] = pattern(token, readable + i);
        mem.write(base + off, scratch, 0, len);
        readable += len;
      } else {
        writable += len;
      }
      off += len;
    }
    const id = drv.add(addrs, lens, out, inn, token, op.indirect);
    if (id < 0) return; // full
    nextToken++;
    const p: Posted = { token, id, readable, writable, crossBytes };
    posted.set(token, p);
    expect(byId.has(id)).toBe(false);
    byId.set(id, p);
    unpublished.add(token);
  };

  const expectedReadable = (p: Posted, i: number): number => (i < p.crossBytes ? 0xc5 : pattern(p.token, i));

  const pop = (n: number): void => {
    const got = dev.popBurst(chains, n);
    for (let k = 0; k < got; k++) {
      const c = chains[k]!;
      const p = byId.get(c.head);
      expect(p).toBeDefined();
      expect(unpublished.has(p!.token)).toBe(false);
      expect(held.includes(p!)).toBe(false);
      expect(pushedLen.has(p!.token)).toBe(false);
      expect(c.readableBytes).toBe(p!.readable);
      expect(c.writableBytes).toBe(p!.writable);
      expect(c.read(0, scratch, 0, p!.readable)).toBe(p!.readable);
      for (let i = 0; i < p!.readable; i++) if (scratch[i] !== expectedReadable(p!, i)) expect.fail(`token ${p!.token} byte ${i}`);
      // Write the reply now (the chain object is reused by the next pop).
      for (let i = 0; i < p!.writable; i++) scratch[i] = pattern(p!.token ^ 0x55, i);
      expect(c.write(0, scratch, 0, p!.writable)).toBe(p!.writable);
      held.push(p!);
    }
    if (got < n) {
      // Nothing more is visible: everything published has been popped.
      for (const p of posted.values()) {
        if (!unpublished.has(p.token) && !pushedLen.has(p.token) && !held.includes(p)) expect.fail(`published token ${p.token} not popped`);
      }
    }
  };

  const push = (pick: number, frac: number): void => {
    if (held.length === 0) return;
    const p = held.splice(pick % held.length, 1)[0]!;
    const len = Math.floor(frac * p.writable);
    dev.push(p.id, len);
    pushedLen.set(p.token, len);
    stagedTokens.push(p.token);
  };

  const markFlushed = (): void => {
    if (stagedTokens.length > 0) flushedAfterArm = true;
    for (const t of stagedTokens) flushed.add(t);
    stagedTokens.length = 0;
  };

  const takeUsed = (n: number): void => {
    for (let k = 0; k < n; k++) {
      if (!drv.getUsed(used)) {
        for (const t of flushed) if (!returned.has(t)) expect.fail(`flushed token ${t} not returned`);
        return;
      }
      const t = used.token!;
      expect(returned.has(t)).toBe(false);
      expect(flushed.has(t)).toBe(true);
      expect(used.len).toBe(pushedLen.get(t));
      const p = posted.get(t)!;
      expect(used.id).toBe(p.id);
      returned.add(t);
      posted.delete(t);
      byId.delete(p.id);
      // The reply data is in the writable area (after the readable segments).
      const base = regionOf(t) + (p.readable - p.crossBytes);
      mem.read(base, scratch, 0, used.len);
      for (let i = 0; i < used.len; i++) if (scratch[i] !== pattern(t ^ 0x55, i)) expect.fail(`reply of ${t} byte ${i}`);
    }
  };

  const publish = (): void => {
    if (unpublished.size > 0) publishedAfterArm = true;
    drv.publish();
    unpublished.clear();
  };

  // The CROSS area holds a constant readable pattern.
  mem.fill(CROSS, 0xc5, 2000);

  for (const op of ops) {
    switch (op.t) {
      case 'add':
        add(op);
        break;
      case 'publish':
        publish();
        break;
      case 'kick': {
        const had = publishedAfterArm || unpublished.size > 0;
        publish();
        const k = drv.needsKick();
        if (devArmed && had) {
          expect(k).toBe(true); // a re-armed device that found the ring empty must be kicked
        }
        if (k) devArmed = false;
        break;
      }
      case 'pop':
        pop(op.n);
        break;
      case 'push':
        push(op.pick, op.frac);
        break;
      case 'flush':
        dev.flush();
        markFlushed();
        break;
      case 'notify': {
        const had = flushedAfterArm || stagedTokens.length > 0;
        const n = dev.needsNotify();
        markFlushed();
        if (drvArmed && had) {
          expect(n).toBe(true); // a re-armed driver that found nothing must be called
        }
        if (n) drvArmed = false;
        break;
      }
      case 'used':
        takeUsed(op.n);
        break;
      case 'devNotify':
        if (op.on) {
          const work = dev.enableNotifications();
          // Chains published from now on (including ones already added) must kick.
          devArmed = !work;
          publishedAfterArm = false;
        } else {
          dev.disableNotifications();
          devArmed = false;
        }
        break;
      case 'drvCb':
        if (op.on) {
          const pending = drv.enableCallbacks();
          // Used entries flushed from now on (including ones already staged) must call.
          drvArmed = !pending;
          flushedAfterArm = false;
        } else {
          drv.disableCallbacks();
          drvArmed = false;
        }
        break;
    }
  }
  // Drain: everything posted comes back exactly once.
  publish();
  for (let guard = 0; guard < 10_000 && posted.size > 0; guard++) {
    pop(8);
    while (held.length > 0) push(0, 1);
    dev.flush();
    markFlushed();
    takeUsed(64);
    if (posted.size > 0 && held.length === 0 && dev.popBurst(chains, 0) === 0 && !dev.hasWork()) {
      // Everything remaining must be flushed but not yet taken; takeUsed asserts that.
      takeUsed(64);
      break;
    }
  }
  expect(posted.size).toBe(0);
  expect(drv.numFree).toBe(size);
  expect(dev.broken).toBe(false);
  checkCanaries();
}

// VIRTIO_PROP_RUNS raises the run count for a long local search.
const RUNS = Number(process.env.VIRTIO_PROP_RUNS ?? 120);

describe('property: driver and device rings agree', () => {
  for (const kind of ['split', 'packed'] as const) {
    for (const eventIdx of [false, true]) {
      it(`${kind} ring, EVENT_IDX ${eventIdx}: every chain comes back once, right length and data, no lost notification`, () => {
        const sizeArb = kind === 'split' ? fc.constantFrom(4, 8, 16) : fc.integer({ min: 3, max: 17 });
        const startArb = kind === 'split' ? fc.oneof(fc.constant(0), fc.integer({ min: 65520, max: 65535 }), fc.integer({ min: 0, max: 65535 })) : fc.constant(0);
        fc.assert(
          fc.property(sizeArb, startArb, fc.array(opArb, { minLength: 1, maxLength: 150 }), (size, start, ops) => {
            run(kind, size, eventIdx, start, ops);
          }),
          { numRuns: RUNS },
        );
      });
    }
  }
});

