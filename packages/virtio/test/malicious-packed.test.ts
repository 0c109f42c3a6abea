import { describe, expect, it } from 'vitest';
import {
  Chain,
  PackedDeviceRing,
  RingError,
  VIRTQ_DESC_F_AVAIL as AV,
  VIRTQ_DESC_F_INDIRECT as IND,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_USED as US,
  VIRTQ_DESC_F_WRITE as WRITE,
  type GuestMemory,
} from '../src/index.js';
import { BUF_HIGH, BUF_LOW, HIGH, MID2, makeMemory, packedLayout, writePackedDesc } from './helpers.js';

const SIZE = 8;
const TABLE = MID2.gpa + 0x2000;

interface Case {
  name: string;
  /** Writes the descriptors; the head is slot 0 (or `start`), available for wrap 1. */
  setup: (mem: GuestMemory, ring: number) => void;
  code: string;
  base?: number;
}

const cases: Case[] = [
  {
    name: 'list through every descriptor (longer than the ring)',
    setup: (m, r) => {
      for (let i = 0; i < SIZE; i++) writePackedDesc(m, r, i, BUF_LOW, 8, 0, AV | NEXT);
    },
    code: 'CHAIN_LOOP',
  },
  {
    name: 'next descriptor of a list not made available',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, BUF_LOW, 8, 0, AV | NEXT);
      writePackedDesc(m, r, 1, BUF_LOW, 8, 0, 0); // AVAIL 0 / USED 0: not available for wrap 1
    },
    code: 'PACKED_WRAP',
  },
  {
    name: 'next descriptor looks used (AVAIL == USED)',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, BUF_LOW, 8, 0, AV | NEXT);
      writePackedDesc(m, r, 1, BUF_LOW, 8, 0, AV | US);
    },
    code: 'PACKED_WRAP',
  },
  {
    name: 'list crossing the ring end without flipping the wrap bits',
    base: 6 | (1 << 15),
    setup: (m, r) => {
      writePackedDesc(m, r, 6, BUF_LOW, 8, 0, AV | NEXT);
      writePackedDesc(m, r, 7, BUF_LOW, 8, 0, AV | NEXT);
      writePackedDesc(m, r, 0, BUF_LOW, 8, 0, AV); // should be USED-only (wrap 0) after the wrap
    },
    code: 'PACKED_WRAP',
  },
  {
    name: 'indirect descriptor inside a NEXT list',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, BUF_LOW, 8, 0, AV | NEXT);
      writePackedDesc(m, r, 1, TABLE, 16, 0, AV | IND);
    },
    code: 'INDIRECT_NEXT',
  },
  {
    name: 'indirect with NEXT',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, TABLE, 16, 0, AV | IND | NEXT);
      writePackedDesc(m, r, 1, BUF_LOW, 8, 0, AV);
    },
    code: 'INDIRECT_NEXT',
  },
  {
    name: 'nested indirect',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, TABLE, 32, 0, AV | IND);
      writePackedDesc(m, TABLE, 0, BUF_LOW, 8, 0, 0);
      writePackedDesc(m, TABLE, 1, TABLE + 0x100, 16, 0, IND);
    },
    code: 'NESTED_INDIRECT',
  },
  {
    name: 'indirect length not a multiple of 16',
    setup: (m, r) => writePackedDesc(m, r, 0, TABLE, 40, 0, AV | IND),
    code: 'INDIRECT_LEN',
  },
  {
    name: 'indirect table longer than the queue size',
    setup: (m, r) => writePackedDesc(m, r, 0, TABLE, 16 * (SIZE + 1), 0, AV | IND),
    code: 'CHAIN_LENGTH',
  },
  {
    name: 'indirect table in a gap',
    setup: (m, r) => writePackedDesc(m, r, 0, 0xb0000, 16, 0, AV | IND),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer crossing a region end into a gap',
    setup: (m, r) => writePackedDesc(m, r, 0, HIGH.gpa + HIGH.size - 8, 16, 0, AV | WRITE),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer address >= 2^53',
    setup: (m, r) => writePackedDesc(m, r, 0, 2 ** 60, 16, 0, AV),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer in an indirect table outside memory',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, TABLE, 16, 0, AV | IND);
      writePackedDesc(m, TABLE, 0, 0xc0000, 8, 0, 0);
    },
    code: 'ADDR_RANGE',
  },
  {
    name: 'writable before readable',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, BUF_HIGH, 8, 0, AV | WRITE | NEXT);
      writePackedDesc(m, r, 1, BUF_LOW, 8, 0, AV);
    },
    code: 'WRITE_BEFORE_READ',
  },
  {
    name: 'writable before readable in an indirect table',
    setup: (m, r) => {
      writePackedDesc(m, r, 0, TABLE, 32, 0, AV | IND);
      writePackedDesc(m, TABLE, 0, BUF_HIGH, 8, 0, WRITE);
      writePackedDesc(m, TABLE, 1, BUF_LOW, 8, 0, 0);
    },
    code: 'WRITE_BEFORE_READ',
  },
];

describe('packed ring: malicious guest', () => {
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, () => {
      const t = makeMemory();
      const cfg = packedLayout(SIZE);
      const dev = new PackedDeviceRing(t.mem, cfg, c.base === undefined ? {} : { vringBase: c.base });
      c.setup(t.mem, cfg.descGpa);
      const chain = new Chain(2);
      let err: unknown;
      try {
        dev.pop(chain);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RingError);
      expect((err as RingError).code).toBe(c.code);
      expect(dev.broken).toBe(true);
      expect(() => dev.pop(chain)).toThrow(/BROKEN/);
      t.checkCanaries();
    });
  }

  it('a head that is not available (zeroed, or used) is simply no work', () => {
    const t = makeMemory();
    const cfg = packedLayout(SIZE);
    const dev = new PackedDeviceRing(t.mem, cfg);
    const c = new Chain();
    expect(dev.pop(c)).toBe(false);
    writePackedDesc(t.mem, cfg.descGpa, 0, BUF_LOW, 8, 0, AV | US);
    expect(dev.pop(c)).toBe(false);
    expect(dev.broken).toBe(false);
  });

  it('a list of exactly the queue size across the ring end is accepted', () => {
    const t = makeMemory();
    const cfg = packedLayout(SIZE);
    const dev = new PackedDeviceRing(t.mem, cfg, { vringBase: 3 | (1 << 15) });
    for (let k = 0; k < SIZE; k++) {
      const slot = (3 + k) % SIZE;
      const wrapped = 3 + k >= SIZE;
      writePackedDesc(t.mem, cfg.descGpa, slot, BUF_LOW, 8, 42, (wrapped ? US : AV) | (k < SIZE - 1 ? NEXT : 0));
    }
    const c = new Chain(2);
    expect(dev.pop(c)).toBe(true);
    expect(c.count).toBe(SIZE);
    expect(c.head).toBe(42);
    expect(dev.lastAvailIdx).toBe(3);
    expect(dev.availWrapCounter).toBe(0);
  });
});
