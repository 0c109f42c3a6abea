/**
 * Ring fuzzer: after a correct negotiation, a hostile guest writes descriptor
 * tables and ring indices by hand and kicks. The victim device runs the
 * loopback module (it reads TX chains and writes RX chains) in a back-end
 * child process; another device in the same process carries witness traffic.
 *
 * Each named case must end with the device in NEEDS_RESET (the vring's err
 * eventfd fired and GET_STATUS shows the bit) within a bounded time, with no
 * write outside the buffers the device may write (canaries at every region
 * end; regions are separated by GPA holes), the back-end alive and still
 * answering (a graceful stop works), and the other device's traffic flowing.
 * Valid edge cases (buffers ending exactly at a region end, a chain of exactly
 * the queue size) must complete normally. Then seeded random garbage.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceStatus } from '@vhost-ts/vhost/protocol';
import { VIRTQ_DESC_F_AVAIL as AV, VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_USED as US, VIRTQ_DESC_F_WRITE as WRITE } from '@vhost-ts/virtio';
import { assertBackToBaseline, type ResourceSnapshot } from '../support/leaks.js';
import { ensureBuilt } from './lib/build.js';
import { BackendProcess } from './lib/backend-process.js';
import { CANARY_BYTES, HostileGuest } from './lib/hostile-guest.js';
import { Prng } from './lib/prng.js';
import { startWitness, type Witness } from './lib/witness.js';

const SEED = Number(process.env.VHOST_TS_FUZZ_SEED ?? 0x5eed);
const GARBAGE_ROUNDS = Number(process.env.VHOST_TS_RING_FUZZ_ROUNDS ?? 24);
const RX = 0;
const TX = 1;

let be: BackendProcess;
let witness: Witness;
let baseline: ResourceSnapshot;

beforeAll(async () => {
  await ensureBuilt();
  be = await BackendProcess.start({
    drivers: [
      { name: 'victim', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32, 28, 34], ackTimeoutMs: 2000 },
      { name: 'other', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] },
    ],
  });
  // Warm-up of the victim socket, then the baseline (the witness's device is not part of it:
  // it is compared after the witness closes).
  const g = await HostileGuest.open(be.sockets.victim!);
  await g.close();
  const w = await startWitness(be.sockets.other!);
  await w.flows(50);
  await w.close();
  baseline = await be.snapshot();
  witness = await startWitness(be.sockets.other!);
}, 200_000);

afterAll(async () => {
  await witness?.close().catch(() => undefined);
  await be?.stop();
});

interface RingCase {
  name: string;
  packed?: boolean;
  /** The vring carrying the hostile descriptors. */
  ring: typeof RX | typeof TX;
  /** Writes descriptors and makes them available. */
  setup(g: HostileGuest): void;
  expect: 'reset' | 'ok';
}

/** Split: one hostile head at slot 0 of TX (RX gets valid buffers first). */
function splitTx(name: string, write: (g: HostileGuest, desc: number, q: number) => number[] | void, expectation: 'reset' | 'ok' = 'reset', idx?: (q: number) => number): RingCase {
  return {
    name: `split TX: ${name}`,
    ring: TX,
    expect: expectation,
    setup(g) {
      g.postWritable(RX, 8);
      const v = g.fe.vrings[TX]!;
      const heads = write(g, v.descGpa, v.size) ?? [0];
      g.publishSplit(TX, heads, idx?.(v.size));
    },
  };
}

/** Split: hostile writable descriptors on RX while TX carries one valid frame. */
function splitRx(name: string, write: (g: HostileGuest, desc: number, q: number) => void, expectation: 'reset' | 'ok' = 'reset'): RingCase {
  return {
    name: `split RX: ${name}`,
    ring: RX,
    expect: expectation,
    setup(g) {
      const v = g.fe.vrings[RX]!;
      write(g, v.descGpa, v.size);
      g.publishSplit(RX, [0]);
      g.postReadable(TX, 1);
    },
  };
}

/** Packed: hostile descriptors from slot 0 of TX (wrap counter 1: AVAIL set, USED clear). */
function packedTx(name: string, write: (g: HostileGuest, desc: number, q: number) => void, expectation: 'reset' | 'ok' = 'reset'): RingCase {
  return {
    name: `packed TX: ${name}`,
    packed: true,
    ring: TX,
    expect: expectation,
    setup(g) {
      g.postWritable(RX, 8);
      const v = g.fe.vrings[TX]!;
      write(g, v.descGpa, v.size);
    },
  };
}

function packedRx(name: string, write: (g: HostileGuest, desc: number, q: number) => void): RingCase {
  return {
    name: `packed RX: ${name}`,
    packed: true,
    ring: RX,
    expect: 'reset',
    setup(g) {
      const v = g.fe.vrings[RX]!;
      write(g, v.descGpa, v.size);
      g.postReadable(TX, 1);
    },
  };
}

const buf = (g: HostileGuest, size = 256): number => g.alloc(size);
const hole = (g: HostileGuest): number => g.regions[0]!.end + 0x8_0000;
const TWO53 = 2 ** 53;

const CASES: RingCase[] = [
  // ---- split, TX (device-readable chains) ------------------------------------------------------------
  splitTx('two-descriptor loop', (g, d) => {
    const b = buf(g);
    g.splitDesc(d, 0, b, 8, NEXT, 1);
    g.splitDesc(d, 1, b, 8, NEXT, 0);
  }),
  splitTx('self loop', (g, d) => g.splitDesc(d, 0, buf(g), 8, NEXT, 0)),
  splitTx('chain through every descriptor and back (longer than the ring)', (g, d, q) => {
    const b = buf(g);
    for (let i = 0; i < q; i++) g.splitDesc(d, i, b, 1, NEXT, (i + 1) % q);
  }),
  splitTx('next index beyond the ring', (g, d, q) => g.splitDesc(d, 0, buf(g), 8, NEXT, q + 3)),
  splitTx('head index beyond the ring', () => [70]),
  splitTx('head index 0xffff', () => [0xffff]),
  splitTx('nested indirect', (g, d) => {
    const t = g.alloc(0x200, 16);
    g.splitDesc(d, 0, t, 32, IND, 0);
    g.splitDesc(t, 0, buf(g), 8, NEXT, 1);
    g.splitDesc(t, 1, t + 0x100, 16, IND, 0);
  }),
  splitTx('indirect length not a multiple of 16', (g, d) => g.splitDesc(d, 0, g.alloc(0x100, 16), 24, IND, 0)),
  splitTx('indirect length 0', (g, d) => g.splitDesc(d, 0, g.alloc(0x100, 16), 0, IND, 0)),
  splitTx('indirect with NEXT', (g, d) => {
    const t = g.alloc(0x100, 16);
    g.splitDesc(d, 0, t, 16, IND | NEXT, 1);
    g.splitDesc(t, 0, buf(g), 8, 0, 0);
  }),
  splitTx('indirect table longer than the queue size', (g, d, q) => {
    const t = g.alloc(16 * (q + 1), 16);
    const b = buf(g);
    for (let i = 0; i <= q; i++) g.splitDesc(t, i, b, 1, i < q ? NEXT : 0, i + 1);
    g.splitDesc(d, 0, t, 16 * (q + 1), IND, 0);
  }),
  splitTx('loop inside an indirect table', (g, d) => {
    const t = g.alloc(0x100, 16);
    const b = buf(g);
    g.splitDesc(t, 0, b, 8, NEXT, 1);
    g.splitDesc(t, 1, b, 8, NEXT, 0);
    g.splitDesc(d, 0, t, 32, IND, 0);
  }),
  splitTx('indirect table in a GPA hole', (g, d) => g.splitDesc(d, 0, hole(g), 32, IND, 0)),
  splitTx('indirect table crossing a region end', (g, d) => g.splitDesc(d, 0, g.regions[0]!.end - 16, 32, IND, 0)),
  splitTx('buffer in a GPA hole', (g, d) => g.splitDesc(d, 0, hole(g), 64, 0, 0)),
  splitTx('buffer crossing a region end into the hole', (g, d) => g.splitDesc(d, 0, g.regions[1]!.end - 8, 64, 0, 0)),
  splitTx('4 GiB length', (g, d) => g.splitDesc(d, 0, buf(g), 0xffff_ffff, 0, 0)),
  splitTx('address 2^53', (g, d) => g.splitDesc(d, 0, TWO53, 64, 0, 0)),
  splitTx('address 2^64 - 4096 (wraps with the length)', (g, d) => g.splitDesc(d, 0, (1n << 64n) - 4096n, 8192, 0, 0)),
  splitTx('avail idx jumps by more than the ring size', (g, d) => g.splitDesc(d, 0, buf(g), 8, 0, 0), 'reset', (q) => q + 5),
  splitTx('avail idx jumps by 0x8000', (g, d) => g.splitDesc(d, 0, buf(g), 8, 0, 0), 'reset', () => 0x8000),
  splitTx('writable descriptor before a readable one', (g, d) => {
    const b = buf(g);
    g.splitDesc(d, 0, b, 8, WRITE | NEXT, 1);
    g.splitDesc(d, 1, b + 64, 8, 0, 0);
  }),
  // ---- split, RX (device-writable chains: a wrong write would hit a canary) --------------------------------
  splitRx('writable buffer crossing a region end', (g, d) => g.splitDesc(d, 0, g.regions[1]!.end - 8, 2048, WRITE, 0)),
  splitRx('writable buffer in a GPA hole', (g, d) => g.splitDesc(d, 0, hole(g), 2048, WRITE, 0)),
  splitRx('writable 4 GiB length at the last region', (g, d) => g.splitDesc(d, 0, g.regions[2]!.end - CANARY_BYTES, 0xffff_ffff, WRITE, 0)),
  splitRx('writable chain whose second descriptor crosses a region end', (g, d) => {
    g.splitDesc(d, 0, g.regions[2]!.end - CANARY_BYTES, 16, WRITE | NEXT, 1);
    g.splitDesc(d, 1, g.regions[0]!.end - 4, 2048, WRITE, 0);
  }),
  splitRx('writable loop', (g, d) => {
    const b = buf(g, 4096);
    g.splitDesc(d, 0, b, 2048, WRITE | NEXT, 1);
    g.splitDesc(d, 1, b + 2048, 2048, WRITE | NEXT, 0);
  }),
  // ---- packed --------------------------------------------------------------------------------------
  packedTx('list through every descriptor (longer than the ring)', (g, d, q) => {
    const b = buf(g);
    for (let i = q - 1; i >= 0; i--) g.packedDesc(d, i, b, 1, 0, AV | NEXT);
  }),
  packedTx('next descriptor of a list not made available (wrap counter violation)', (g, d) => {
    const b = buf(g);
    g.packedDesc(d, 1, b, 8, 0, 0);
    g.packedDesc(d, 0, b, 8, 0, AV | NEXT);
  }),
  packedTx('next descriptor looks used (AVAIL == USED)', (g, d) => {
    const b = buf(g);
    g.packedDesc(d, 1, b, 8, 0, AV | US);
    g.packedDesc(d, 0, b, 8, 0, AV | NEXT);
  }),
  packedTx('nested indirect', (g, d) => {
    const t = g.alloc(0x200, 16);
    g.packedDesc(t, 0, buf(g), 8, 0, 0);
    g.packedDesc(t, 1, t + 0x100, 16, 0, IND);
    g.packedDesc(d, 0, t, 32, 0, AV | IND);
  }),
  packedTx('indirect length not a multiple of 16', (g, d) => g.packedDesc(d, 0, g.alloc(0x100, 16), 40, 0, AV | IND)),
  packedTx('indirect with NEXT', (g, d) => {
    g.packedDesc(d, 1, buf(g), 8, 0, AV);
    g.packedDesc(d, 0, g.alloc(0x100, 16), 16, 0, AV | IND | NEXT);
  }),
  packedTx('indirect table longer than the queue size', (g, d, q) => g.packedDesc(d, 0, g.alloc(16 * (q + 1), 16), 16 * (q + 1), 0, AV | IND)),
  packedTx('indirect table in a GPA hole', (g, d) => g.packedDesc(d, 0, hole(g), 16, 0, AV | IND)),
  packedTx('buffer crossing a region end', (g, d) => g.packedDesc(d, 0, g.regions[1]!.end - 8, 64, 0, AV)),
  packedTx('4 GiB length', (g, d) => g.packedDesc(d, 0, buf(g), 0xffff_ffff, 0, AV)),
  packedTx('address 2^53', (g, d) => g.packedDesc(d, 0, TWO53, 64, 0, AV)),
  packedRx('writable buffer crossing a region end', (g, d) => g.packedDesc(d, 0, g.regions[1]!.end - 8, 2048, 0, AV | WRITE)),
  // ---- valid edge cases: must complete, no reset ---------------------------------------------------------
  splitTx('buffer ending exactly at a region end (valid)', (g, d) => {
    const end = g.regions[2]!.end;
    g.fill(end - 64, 64, 0x22); // TX data inside the canary zone: read only, the canary stays intact
    g.exemptCanary(end - 64, 64);
    g.splitDesc(d, 0, end - 64, 64, 0, 0);
  }, 'ok'),
  splitTx('chain of exactly the queue size (valid)', (g, d, q) => {
    const b = buf(g, q);
    for (let i = 0; i < q; i++) g.splitDesc(d, i, b + i, 1, i < q - 1 ? NEXT : 0, i + 1);
  }, 'ok'),
  {
    name: 'split RX: writable buffer ending exactly at a region end (valid)',
    ring: RX,
    expect: 'ok',
    setup(g) {
      const v = g.fe.vrings[RX]!;
      const end = g.regions[2]!.end;
      g.exemptCanary(end - 2048, 2048);
      g.splitDesc(v.descGpa, 0, end - 2048, 2048, WRITE, 0);
      g.publishSplit(RX, [0]);
      g.postReadable(TX, 1);
    },
  },
  packedTx('buffer ending exactly at a region end (valid)', (g, d) => {
    const end = g.regions[1]!.end;
    g.exemptCanary(end - 64, 64);
    g.packedDesc(d, 0, end - 64, 64, 0, AV);
  }, 'ok'),
];

/** The TX chain at slot 0 was completed (split: used.idx 1; packed: slot 0 flags AVAIL == USED == 1). */
function txCompleted(g: HostileGuest): boolean {
  if (g.packed) return (g.packedFlags(TX, 0) & (AV | US)) === (AV | US);
  return g.usedIdx(TX) >= 1;
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return check();
}

describe('ring fuzzer: hostile descriptor tables', () => {
  for (const c of CASES) {
    it(`${c.name} -> ${c.expect === 'reset' ? 'NEEDS_RESET, err eventfd' : 'completes normally'}`, async () => {
      const g = await HostileGuest.open(be.sockets.victim!, { packed: c.packed ?? false });
      let closed = false;
      try {
        c.setup(g);
        const t0 = performance.now();
        g.kick(RX);
        g.kick(TX);
        if (c.expect === 'reset') {
          const seen = await g.waitNeedsReset(c.ring, 5000);
          expect(seen, `device did not report the broken ring within 5 s (err eventfd / NEEDS_RESET)`).toMatchObject({ err: true, needsReset: true });
        } else {
          expect(await until(() => txCompleted(g), 5000), 'the valid chain was not completed').toBe(true);
          expect((await g.status()) & DeviceStatus.NEEDS_RESET).toBe(0);
          expect(g.errCount(c.ring)).toBe(0);
        }
        expect(performance.now() - t0).toBeLessThan(5000);
        expect(g.canaryDamage(), 'a write landed outside the buffers the device may write').toEqual([]);
        // Still answering: the stop sequence (GET_VRING_BASE per ring) completes.
        const { stopped } = await g.close();
        closed = true;
        expect(stopped).toBe(true);
      } finally {
        if (!closed) await g.close().catch(() => undefined);
      }
      expect(be.alive, be.stderr()).toBe(true);
      expect(await witness.flows(20, 5000), 'the other device stopped moving traffic').toBe(true);
    });
  }

  it(`${GARBAGE_ROUNDS} rounds of seeded random descriptor tables and indices (seed ${SEED}): no crash, no hang, no stray write, other device unaffected`, async () => {
    let resets = 0;
    for (let round = 0; round < GARBAGE_ROUNDS; round++) {
      const r = new Prng(SEED, 1000 + round);
      const packed = r.chance(0.4);
      const g = await HostileGuest.open(be.sockets.victim!, { packed });
      try {
        g.postWritable(RX, r.range(0, 8));
        const v = g.fe.vrings[TX]!;
        // Random table plus some pointers into a random indirect table, edges of regions, holes.
        const t = g.alloc(0x400, 16);
        g.bytes(t, r.bytes(0x400));
        const addrs = [t, g.regions[0]!.end - 8, g.regions[1]!.end - 16, hole(g), buf(g), TWO53, r.u32()];
        for (let i = 0; i < v.size; i++) {
          if (r.chance(0.5)) {
            g.bytes(v.descGpa + i * 16, r.bytes(16));
            continue;
          }
          const flags = (r.u32() & (NEXT | WRITE | IND)) | (packed ? r.pick([AV, AV, US, AV | US, 0]) : 0);
          const len = r.pick([0, 1, 16, 24, 64, 0x1000, 0xffff_ffff, r.u32()]);
          if (packed) g.packedDesc(v.descGpa, v.size - 1 - i, r.pick(addrs), len, r.u32() & 0xffff, flags);
          else g.splitDesc(v.descGpa, i, r.pick(addrs), len, flags, r.chance(0.8) ? r.int(v.size) : r.u32() & 0xffff);
        }
        if (!packed) g.publishSplit(TX, Array.from({ length: r.range(1, 8) }, () => (r.chance(0.9) ? r.int(v.size) : r.u32() & 0xffff)), r.chance(0.2) ? r.u32() & 0xffff : undefined);
        g.kick(RX);
        g.kick(TX);
        await new Promise((res) => setTimeout(res, 100));
        const t0 = performance.now();
        const status = await g.status(); // answered: the control plane is not stuck
        expect(performance.now() - t0).toBeLessThan(3000);
        if ((status & DeviceStatus.NEEDS_RESET) !== 0) resets++;
        expect(g.canaryDamage(), `round ${round}`).toEqual([]);
      } finally {
        await g.close();
      }
      expect(be.alive, be.stderr()).toBe(true);
    }
    console.log(`ring garbage: ${GARBAGE_ROUNDS} rounds, ${resets} ended in NEEDS_RESET`);
    expect(resets).toBeGreaterThan(0);
    expect(await witness.flows(20, 5000)).toBe(true);
  });

  it('afterwards: back-end resources back to the baseline, the witness traffic intact', async () => {
    const traffic = await witness.close();
    expect(traffic).toMatchObject({ bad: 0, duplicated: 0, foreign: 0 });
    expect(traffic.received).toBeGreaterThan(0);
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 15_000 });
    const logs = await be.logs();
    expect(logs.internal, `internal errors in the back-end log:\n${logs.internalLines.join('\n\n')}`).toBe(0);
    witness = await startWitness(be.sockets.other!); // afterAll closes it
  });
});
