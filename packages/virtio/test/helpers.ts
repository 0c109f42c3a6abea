import {
  DESC_SIZE,
  GuestMemory,
  SPLIT_DESC_FLAGS,
  SPLIT_DESC_NEXT,
  type GuestRegionInit,
} from '../src/index.js';

/**
 * A QEMU-like guest layout with gaps, contiguous regions backed by different
 * SABs, and a region above 4 GiB. Each SAB has canary bytes before and after
 * its region so tests can prove nothing outside a region is touched.
 */
export const MiB = 1024 * 1024;
export const LOW = { gpa: 0, size: 640 * 1024 }; // 0 .. 0xA0000, then a gap
export const MID1 = { gpa: 1 * MiB, size: 1 * MiB }; // 1 MiB .. 2 MiB
export const MID2 = { gpa: 2 * MiB, size: 1 * MiB }; // 2 MiB .. 3 MiB (GPA-contiguous with MID1, other SAB)
export const HIGH = { gpa: 4 * 1024 * MiB, size: 1 * MiB }; // 4 GiB .. 4 GiB + 1 MiB
export const CANARY = 0xa5;
const PAD = 4096;

export interface TestMemory {
  mem: GuestMemory;
  inits: GuestRegionInit[];
  /** Throws if a canary byte outside any region changed. */
  checkCanaries(): void;
}

export function makeMemory(): TestMemory {
  const inits: GuestRegionInit[] = [];
  for (const r of [LOW, MID1, MID2, HIGH]) {
    const sab = new SharedArrayBuffer(r.size + 2 * PAD);
    new Uint8Array(sab).fill(CANARY);
    new Uint8Array(sab, PAD, r.size).fill(0);
    inits.push({ gpa: r.gpa, size: r.size, sab, sabOffset: PAD });
  }
  const mem = new GuestMemory(inits);
  return {
    mem,
    inits,
    checkCanaries() {
      for (const init of inits) {
        const all = new Uint8Array(init.sab);
        for (let i = 0; i < PAD; i++) {
          if (all[i] !== CANARY || all[init.sabOffset + init.size + i] !== CANARY) {
            throw new Error(`canary changed near region ${init.gpa}`);
          }
        }
      }
    },
  };
}

/** Ring areas for a split ring of `size`: desc and avail in MID1, used in HIGH. */
export function splitLayout(size: number, eventIdx = false) {
  return {
    size,
    descGpa: MID1.gpa,
    availGpa: MID1.gpa + 16 * size,
    usedGpa: HIGH.gpa + 0x1000,
    eventIdx,
  };
}

/** Ring areas for a packed ring of `size`: descriptors in MID1, event areas in HIGH. */
export function packedLayout(size: number, eventIdx = false) {
  return {
    size,
    descGpa: MID1.gpa,
    driverEventGpa: HIGH.gpa + 0x1000,
    deviceEventGpa: HIGH.gpa + 0x1004,
    eventIdx,
  };
}

/** Data buffers for tests: GPAs in LOW, MID2 and HIGH (away from the rings). */
export const BUF_LOW = 0x10000;
export const BUF_MID2 = MID2.gpa + 0x10000;
export const BUF_HIGH = HIGH.gpa + 0x40000;

/** Writes a raw split descriptor (for malicious-guest tests). */
export function writeSplitDesc(mem: GuestMemory, tableGpa: number, i: number, addr: number, len: number, flags: number, next: number): void {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, addr % 2 ** 32, true);
  dv.setUint32(4, Math.floor(addr / 2 ** 32), true);
  dv.setUint32(8, len, true);
  dv.setUint16(SPLIT_DESC_FLAGS, flags, true);
  dv.setUint16(SPLIT_DESC_NEXT, next, true);
  mem.write(tableGpa + i * DESC_SIZE, b, 0, 16);
}

/** Writes a raw packed descriptor. */
export function writePackedDesc(mem: GuestMemory, tableGpa: number, i: number, addr: number, len: number, id: number, flags: number): void {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, addr % 2 ** 32, true);
  dv.setUint32(4, Math.floor(addr / 2 ** 32), true);
  dv.setUint32(8, len, true);
  dv.setUint16(12, id, true);
  dv.setUint16(14, flags, true);
  mem.write(tableGpa + i * DESC_SIZE, b, 0, 16);
}

export function readU16(mem: GuestMemory, gpa: number): number {
  const b = new Uint8Array(2);
  mem.read(gpa, b, 0, 2);
  return b[0]! | (b[1]! << 8);
}

export function writeU16(mem: GuestMemory, gpa: number, v: number): void {
  mem.write(gpa, Uint8Array.of(v & 0xff, (v >> 8) & 0xff), 0, 2);
}

export function readU32(mem: GuestMemory, gpa: number): number {
  const b = new Uint8Array(4);
  mem.read(gpa, b, 0, 4);
  return new DataView(b.buffer).getUint32(0, true);
}

export function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}
