import { describe, expect, it } from 'vitest';
import {
  Chain,
  RingError,
  SplitDeviceRing,
  VIRTQ_DESC_F_INDIRECT as IND,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
  type GuestMemory,
} from '../src/index.js';
import { BUF_HIGH, BUF_LOW, HIGH, MID2, makeMemory, splitLayout, writeSplitDesc, writeU16 } from './helpers.js';

const SIZE = 8;
const TABLE = MID2.gpa + 0x2000; // an indirect table area

type Setup = (mem: GuestMemory, descGpa: number) => void;
interface Case {
  name: string;
  head?: number;
  availIdx?: number;
  setup: Setup;
  code: string;
  strictOrder?: boolean;
}

const cases: Case[] = [
  { name: 'head index >= queue size', head: SIZE, setup: () => {}, code: 'DESC_INDEX' },
  { name: 'head index 0xffff', head: 0xffff, setup: () => {}, code: 'DESC_INDEX' },
  {
    name: 'next index >= queue size',
    setup: (m, d) => writeSplitDesc(m, d, 0, BUF_LOW, 8, NEXT, SIZE),
    code: 'DESC_INDEX',
  },
  {
    name: 'two-descriptor loop',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, BUF_LOW, 8, NEXT, 1);
      writeSplitDesc(m, d, 1, BUF_LOW, 8, NEXT, 0);
    },
    code: 'CHAIN_LOOP',
  },
  {
    name: 'self loop',
    setup: (m, d) => writeSplitDesc(m, d, 0, BUF_LOW, 8, NEXT, 0),
    code: 'CHAIN_LOOP',
  },
  {
    name: 'chain through every descriptor and back (longer than the ring)',
    setup: (m, d) => {
      for (let i = 0; i < SIZE; i++) writeSplitDesc(m, d, i, BUF_LOW + i * 8, 8, NEXT, (i + 1) % SIZE);
    },
    code: 'CHAIN_LOOP',
  },
  {
    name: 'indirect table longer than the queue size',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 16 * 16, IND, 0);
      for (let i = 0; i < 16; i++) writeSplitDesc(m, TABLE, i, BUF_LOW, 8, i < 15 ? NEXT : 0, i + 1);
    },
    code: 'CHAIN_LENGTH',
  },
  {
    name: 'nested indirect',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 32, IND, 0);
      writeSplitDesc(m, TABLE, 0, BUF_LOW, 8, NEXT, 1);
      writeSplitDesc(m, TABLE, 1, TABLE + 0x100, 16, IND, 0);
    },
    code: 'NESTED_INDIRECT',
  },
  {
    name: 'indirect length not a multiple of 16',
    setup: (m, d) => writeSplitDesc(m, d, 0, TABLE, 24, IND, 0),
    code: 'INDIRECT_LEN',
  },
  {
    name: 'indirect length 0',
    setup: (m, d) => writeSplitDesc(m, d, 0, TABLE, 0, IND, 0),
    code: 'INDIRECT_LEN',
  },
  {
    name: 'indirect with NEXT',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 16, IND | NEXT, 1);
      writeSplitDesc(m, TABLE, 0, BUF_LOW, 8, 0, 0);
    },
    code: 'INDIRECT_NEXT',
  },
  {
    name: 'indirect table outside guest memory',
    setup: (m, d) => writeSplitDesc(m, d, 0, 0xb0000, 32, IND, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'indirect table crossing a region end',
    setup: (m, d) => writeSplitDesc(m, d, 0, HIGH.gpa + HIGH.size - 16, 32, IND, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'loop inside an indirect table',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 32, IND, 0);
      writeSplitDesc(m, TABLE, 0, BUF_LOW, 8, NEXT, 1);
      writeSplitDesc(m, TABLE, 1, BUF_LOW, 8, NEXT, 0);
    },
    code: 'CHAIN_LOOP',
  },
  {
    name: 'indirect next beyond the table',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 32, IND, 0);
      writeSplitDesc(m, TABLE, 0, BUF_LOW, 8, NEXT, 2);
    },
    code: 'DESC_INDEX',
  },
  {
    name: 'buffer in a gap',
    setup: (m, d) => writeSplitDesc(m, d, 0, 0xb0000, 8, WRITE, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer crossing the end of LOW into the gap',
    setup: (m, d) => writeSplitDesc(m, d, 0, 640 * 1024 - 4, 8, WRITE, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer crossing the end of MID2 (contiguous MID1+MID2) into the gap',
    setup: (m, d) => writeSplitDesc(m, d, 0, MID2.gpa - 16, 1024 * 1024 + 32, 0, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'buffer past the end of the last region',
    setup: (m, d) => writeSplitDesc(m, d, 0, HIGH.gpa + HIGH.size - 1, 0xffffffff, WRITE, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'address >= 2^53',
    setup: (m, d) => writeSplitDesc(m, d, 0, 2 ** 53, 8, 0, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'address near 2^64',
    setup: (m, d) => writeSplitDesc(m, d, 0, 2 ** 64 - 4096, 8, 0, 0),
    code: 'ADDR_RANGE',
  },
  {
    name: 'avail idx jumps more than the queue size',
    availIdx: SIZE + 1,
    setup: (m, d) => writeSplitDesc(m, d, 0, BUF_LOW, 8, 0, 0),
    code: 'AVAIL_IDX',
  },
  {
    name: 'avail idx moves backwards (seen as a huge jump)',
    availIdx: 0xffff,
    setup: (m, d) => writeSplitDesc(m, d, 0, BUF_LOW, 8, 0, 0),
    code: 'AVAIL_IDX',
  },
  {
    name: 'writable before readable',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, BUF_HIGH, 8, WRITE | NEXT, 1);
      writeSplitDesc(m, d, 1, BUF_LOW, 8, 0, 0);
    },
    code: 'WRITE_BEFORE_READ',
  },
  {
    name: 'writable before readable inside an indirect table',
    setup: (m, d) => {
      writeSplitDesc(m, d, 0, TABLE, 32, IND, 0);
      writeSplitDesc(m, TABLE, 0, BUF_HIGH, 8, WRITE | NEXT, 1);
      writeSplitDesc(m, TABLE, 1, BUF_LOW, 8, 0, 0);
    },
    code: 'WRITE_BEFORE_READ',
  },
];

describe('split ring: malicious guest', () => {
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, () => {
      const t = makeMemory();
      const cfg = splitLayout(SIZE);
      const dev = new SplitDeviceRing(t.mem, cfg, { strictOrder: c.strictOrder ?? true });
      c.setup(t.mem, cfg.descGpa);
      writeU16(t.mem, cfg.availGpa + 4, c.head ?? 0);
      writeU16(t.mem, cfg.availGpa + 2, c.availIdx ?? 1);
      const chain = new Chain(4);
      let err: unknown;
      try {
        dev.pop(chain);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RingError);
      expect((err as RingError).code).toBe(c.code);
      expect(dev.broken).toBe(true);
      // The ring stays broken; no further work is done.
      expect(() => dev.pop(chain)).toThrow(/BROKEN/);
      t.checkCanaries();
    });
  }

  it('writable before readable is accepted when strictOrder is off', () => {
    const t = makeMemory();
    const cfg = splitLayout(SIZE);
    const dev = new SplitDeviceRing(t.mem, cfg, { strictOrder: false });
    writeSplitDesc(t.mem, cfg.descGpa, 0, BUF_HIGH, 8, WRITE | NEXT, 1);
    writeSplitDesc(t.mem, cfg.descGpa, 1, BUF_LOW, 16, 0, 0);
    writeU16(t.mem, cfg.availGpa + 2, 1);
    const chain = new Chain();
    expect(dev.pop(chain)).toBe(true);
    expect(chain.readableBytes).toBe(16);
    expect(chain.writableBytes).toBe(8);
    const got = new Uint8Array(16);
    expect(chain.read(0, got, 0, 16)).toBe(16);
  });

  it('a chain of exactly the queue size is accepted', () => {
    const t = makeMemory();
    const cfg = splitLayout(SIZE);
    const dev = new SplitDeviceRing(t.mem, cfg);
    for (let i = 0; i < SIZE; i++) writeSplitDesc(t.mem, cfg.descGpa, i, BUF_LOW + i * 8, 8, i < SIZE - 1 ? NEXT : 0, i + 1);
    writeU16(t.mem, cfg.availGpa + 2, 1);
    const chain = new Chain(2);
    expect(dev.pop(chain)).toBe(true);
    expect(chain.count).toBe(SIZE);
  });
});
