/**
 * The test-traffic frame format of the net personality.
 *
 * A frame is an Ethernet II frame (no FCS) whose payload starts with a 24-byte
 * *probe header* followed by a *fill* whose bytes depend only on their
 * position, so a transmitter writes the fill once per buffer and afterwards
 * only the header per packet:
 *
 * ```
 * frame  0  dst MAC (6)   6 src MAC (6)   12 ethertype u16 BE = 0x88B5 (IEEE local experimental)
 * probe 14  magic u32 LE 'VHTS'   18 queue u16   20 flags u16 (0)
 *       22  seq lo u32   26 seq hi u32 (u64 split, < 2^53)   30 frame length u16   32 reserved u16
 *       34  checksum u32 (Fletcher-32 of the probe header bytes 0..20 then of the fill)
 * fill  38  fill[i] = FILL_PATTERN[i] (see {@link fillByte})
 * ```
 * The checksum covers the header and every fill byte, so corrupting any
 * payload byte is detected. The receiver's fast path checks the header's part
 * of the checksum arithmetically and the fill with one native memcmp against
 * the reference pattern, which is equivalent (the fill's checksum is a
 * function of its length only); {@link verifyFrameSlow} recomputes everything
 * from the bytes and exists for tests and for frames split over buffers.
 *
 * Nothing here allocates per packet: frames are read and written in place in
 * guest memory through a `DataView`/`Uint8Array` of the whole region.
 */

export const ETH_HEADER_SIZE = 14;
export const ETHERTYPE_PROBE = 0x88b5;
/** 'VHTS' as a little-endian u32. */
export const PROBE_MAGIC = 0x53544856;
export const PROBE_HEADER_SIZE = 24;
/** Offset of the fill inside the frame. */
export const FILL_OFFSET = ETH_HEADER_SIZE + PROBE_HEADER_SIZE;
/** The smallest frame that carries a probe header (no fill). */
export const MIN_PROBE_FRAME = FILL_OFFSET;
/** Largest frame we generate (the length field is a u16). */
export const MAX_PROBE_FRAME = 65535;

// Offsets inside the frame.
const OFF_ETHERTYPE = 12;
const OFF_MAGIC = 14;
const OFF_QUEUE = 18;
const OFF_FLAGS = 20;
const OFF_SEQ_LO = 22;
const OFF_SEQ_HI = 26;
const OFF_LEN = 30;
const OFF_RSVD = 32;
const OFF_CSUM = 34;

/** Default MAC addresses (locally administered). */
export const DEFAULT_SRC_MAC: readonly number[] = [0x02, 0x76, 0x68, 0x74, 0x73, 0x01];
export const DEFAULT_DST_MAC: readonly number[] = [0x02, 0x76, 0x68, 0x74, 0x73, 0x02];

/** The fill byte at fill position `i` (a position-dependent, non-repeating-per-256 pattern). */
export function fillByte(i: number): number {
  return ((i * 131) ^ (i >>> 8) ^ 0x5a) & 0xff;
}

/** The reference fill (as long as the largest frame) used by the fast path's memcmp. */
export const FILL_PATTERN: Buffer = (() => {
  const b = Buffer.alloc(MAX_PROBE_FRAME - FILL_OFFSET + 1);
  for (let i = 0; i < b.length; i++) b[i] = fillByte(i);
  return b;
})();

// Fletcher-32 state of the fill prefix: FILL_A[n], FILL_B[n] after n 16-bit words
// (the last word of an odd-length fill is zero-padded, see fillSums()).
const MAX_FILL_WORDS = Math.ceil(FILL_PATTERN.length / 2);
const FILL_A = new Uint32Array(MAX_FILL_WORDS + 1);
const FILL_B = new Uint32Array(MAX_FILL_WORDS + 1);
(() => {
  let a = 0;
  let b = 0;
  for (let w = 0; w < MAX_FILL_WORDS; w++) {
    const lo = FILL_PATTERN[2 * w] ?? 0;
    const hi = FILL_PATTERN[2 * w + 1] ?? 0;
    a = (a + (lo | (hi << 8))) % 65535;
    b = (b + a) % 65535;
    FILL_A[w + 1] = a;
    FILL_B[w + 1] = b;
  }
})();
// Odd-length fills: the state after the full words plus a final word holding only the low byte.
function fillSums(fillLen: number): { a: number; b: number; words: number } {
  const full = fillLen >>> 1;
  let a = FILL_A[full]!;
  let b = FILL_B[full]!;
  if (fillLen & 1) {
    a = (a + FILL_PATTERN[fillLen - 1]!) % 65535;
    b = (b + a) % 65535;
    return { a, b, words: full + 1 };
  }
  return { a, b, words: full };
}
// Hot-path variant without an object: the combined checksum for a header (a1,b1) and a fill of fillLen bytes.
function combine(a1: number, b1: number, fillLen: number): number {
  const full = fillLen >>> 1;
  let a2 = FILL_A[full]!;
  let b2 = FILL_B[full]!;
  let words = full;
  if (fillLen & 1) {
    a2 = (a2 + FILL_PATTERN[fillLen - 1]!) % 65535;
    b2 = (b2 + a2) % 65535;
    words++;
  }
  const a = (a1 + a2) % 65535;
  const b = (b1 + ((words * a1) % 65535) + b2) % 65535;
  return ((b << 16) | a) >>> 0;
}

// The reference fill as little-endian u32 words (FILL_U32[k] = bytes 4k..4k+3), for short compares in JS.
const FILL_U32 = (() => {
  const n = FILL_PATTERN.length >>> 2;
  const w = new Uint32Array(n);
  for (let k = 0; k < n; k++) w[k] = FILL_PATTERN.readUInt32LE(4 * k);
  return w;
})();
/** Fills up to this many bytes are compared in JS (a native call costs more than the loop). */
const SHORT_FILL = 128;

/** True when the `len` bytes at `off` equal the reference fill. */
function fillMatches(buf: Buffer, dv: DataView, off: number, len: number): boolean {
  if (len > SHORT_FILL) return buf.compare(FILL_PATTERN, 0, len, off, off + len) === 0;
  const words = len >>> 2;
  for (let k = 0; k < words; k++) if (dv.getUint32(off + 4 * k, true) !== FILL_U32[k]) return false;
  for (let i = words << 2; i < len; i++) if (dv.getUint8(off + i) !== FILL_PATTERN[i]) return false;
  return true;
}

/** Fletcher-32 over `len` bytes (little-endian 16-bit words, odd tail zero-padded) of `bytes` from `off`. */
export function fletcher32(bytes: Uint8Array, off: number, len: number): number {
  let a = 0;
  let b = 0;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) {
    a = (a + (bytes[i]! | (bytes[i + 1]! << 8))) % 65535;
    b = (b + a) % 65535;
  }
  if (len & 1) {
    a = (a + bytes[off + len - 1]!) % 65535;
    b = (b + a) % 65535;
  }
  return ((b << 16) | a) >>> 0;
}

/**
 * Checksum of the 20 probe-header bytes before the checksum field (read from
 * `dv` at frame offset `f`) combined with the fill of `fillLen` bytes. The 10
 * words are summed without reducing (a <= 10 * 65535, b <= 55 * 65535: exact
 * in doubles), then reduced once: Fletcher sums are linear modulo 65535.
 */
function headerChecksum(dv: DataView, f: number, fillLen: number): number {
  let a = 0;
  let b = 0;
  for (let o = f + OFF_MAGIC; o < f + OFF_CSUM; o += 2) {
    a += dv.getUint16(o, true);
    b += a;
  }
  return combine(a % 65535, b % 65535, fillLen);
}

/** The checksum a frame with these fields must carry (reference implementation for tests and tools). */
export function probeChecksum(queue: number, seq: number, frameLen: number): number {
  const hdr = new Uint8Array(PROBE_HEADER_SIZE);
  const dv = new DataView(hdr.buffer);
  dv.setUint32(0, PROBE_MAGIC, true);
  dv.setUint16(4, queue, true);
  dv.setUint16(6, 0, true);
  dv.setUint32(8, seq >>> 0, true);
  dv.setUint32(12, Math.floor(seq / 2 ** 32), true);
  dv.setUint16(16, frameLen, true);
  dv.setUint16(18, 0, true);
  const fillLen = frameLen - FILL_OFFSET;
  const s = fillSums(fillLen);
  let a = 0;
  let b = 0;
  for (let o = 0; o < 20; o += 2) {
    a = (a + dv.getUint16(o, true)) % 65535;
    b = (b + a) % 65535;
  }
  return ((((b + ((s.words * a) % 65535) + s.b) % 65535) << 16) | ((a + s.a) % 65535)) >>> 0;
}

/** Checks a frame size for the generator: a probe header must fit. */
export function checkFrameSize(size: number): void {
  if (!Number.isInteger(size) || size < MIN_PROBE_FRAME || size > MAX_PROBE_FRAME) {
    throw new RangeError(`frame size must be an integer in [${MIN_PROBE_FRAME}, ${MAX_PROBE_FRAME}], got ${size}`);
  }
}

/**
 * Writes the constant part of a probe frame of `frameLen` bytes at `f`: MACs,
 * ethertype, magic, the queue id, the length and the fill. Done once per TX
 * buffer; {@link stampProbe} then writes the per-packet fields.
 */
export function writeProbeTemplate(
  u8: Uint8Array,
  dv: DataView,
  f: number,
  frameLen: number,
  queue: number,
  dst: readonly number[] = DEFAULT_DST_MAC,
  src: readonly number[] = DEFAULT_SRC_MAC,
): void {
  checkFrameSize(frameLen);
  for (let i = 0; i < 6; i++) {
    u8[f + i] = dst[i]!;
    u8[f + 6 + i] = src[i]!;
  }
  dv.setUint16(f + OFF_ETHERTYPE, ETHERTYPE_PROBE, false);
  dv.setUint32(f + OFF_MAGIC, PROBE_MAGIC, true);
  dv.setUint16(f + OFF_QUEUE, queue, true);
  dv.setUint16(f + OFF_FLAGS, 0, true);
  dv.setUint16(f + OFF_LEN, frameLen, true);
  dv.setUint16(f + OFF_RSVD, 0, true);
  u8.set(FILL_PATTERN.subarray(0, frameLen - FILL_OFFSET), f + FILL_OFFSET);
}

/**
 * Writes the per-packet fields (sequence number and checksum) of a frame whose
 * template is already in place. Allocation-free; `seq` < 2^53.
 */
export function stampProbe(dv: DataView, f: number, seq: number, frameLen: number): void {
  dv.setUint32(f + OFF_SEQ_LO, seq >>> 0, true);
  dv.setUint32(f + OFF_SEQ_HI, (seq / 4294967296) >>> 0, true);
  dv.setUint32(f + OFF_CSUM, headerChecksum(dv, f, frameLen - FILL_OFFSET), true);
}

/** Writes a complete probe frame (template + stamp); convenient outside hot paths. */
export function writeProbeFrame(u8: Uint8Array, dv: DataView, f: number, frameLen: number, queue: number, seq: number): void {
  writeProbeTemplate(u8, dv, f, frameLen, queue);
  stampProbe(dv, f, seq, frameLen);
}

/** Verdicts of {@link checkFrame}. Non-negative values are not used; the caller reads seq/queue via getters. */
export const FRAME_OK = 0;
/** Not one of ours (wrong ethertype or magic): e.g. testpmd's txonly UDP frames. */
export const FRAME_FOREIGN = 1;
/** Ours but shorter than its header, or its length field disagrees with the bytes received. */
export const FRAME_BAD_LENGTH = 2;
/** Ours, but the checksum or the fill does not match: corrupted content. */
export const FRAME_BAD_CONTENT = 3;
export type FrameVerdict = typeof FRAME_OK | typeof FRAME_FOREIGN | typeof FRAME_BAD_LENGTH | typeof FRAME_BAD_CONTENT;

/**
 * Checks the frame of `len` received bytes at `f` (contiguous in `buf`).
 * `buf` must be a Buffer view (for the native `compare`) over the same bytes as `dv`.
 * Fast path: header checksum arithmetic + one memcmp of the fill.
 */
export function checkFrame(buf: Buffer, dv: DataView, f: number, len: number): FrameVerdict {
  if (len < ETH_HEADER_SIZE + 4) return FRAME_FOREIGN;
  if (dv.getUint16(f + OFF_ETHERTYPE, false) !== ETHERTYPE_PROBE || dv.getUint32(f + OFF_MAGIC, true) !== PROBE_MAGIC) {
    return FRAME_FOREIGN;
  }
  if (len < FILL_OFFSET || dv.getUint16(f + OFF_LEN, true) !== len) return FRAME_BAD_LENGTH;
  const fillLen = len - FILL_OFFSET;
  if (dv.getUint32(f + OFF_CSUM, true) !== headerChecksum(dv, f, fillLen)) return FRAME_BAD_CONTENT;
  if (dv.getUint16(f + OFF_FLAGS, true) !== 0 || dv.getUint16(f + OFF_RSVD, true) !== 0) return FRAME_BAD_CONTENT;
  if (fillLen > 0 && !fillMatches(buf, dv, f + FILL_OFFSET, fillLen)) return FRAME_BAD_CONTENT;
  return FRAME_OK;
}

/** The reference check: recomputes the Fletcher-32 over every payload byte (no precomputed tables). */
export function verifyFrameSlow(bytes: Uint8Array, f: number, len: number): FrameVerdict {
  if (len < ETH_HEADER_SIZE + 4) return FRAME_FOREIGN;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint16(f + OFF_ETHERTYPE, false) !== ETHERTYPE_PROBE || dv.getUint32(f + OFF_MAGIC, true) !== PROBE_MAGIC) {
    return FRAME_FOREIGN;
  }
  if (len < FILL_OFFSET || dv.getUint16(f + OFF_LEN, true) !== len) return FRAME_BAD_LENGTH;
  // Checksum over header bytes 0..20 then the fill: compute as one pass over a scratch copy.
  const scratch = new Uint8Array(20 + (len - FILL_OFFSET));
  scratch.set(bytes.subarray(f + OFF_MAGIC, f + OFF_CSUM), 0);
  scratch.set(bytes.subarray(f + FILL_OFFSET, f + len), 20);
  // Fletcher over the concatenation equals the header/fill combination only if the header is word aligned (20 B: yes).
  if (fletcher32(scratch, 0, scratch.length) !== dv.getUint32(f + OFF_CSUM, true)) return FRAME_BAD_CONTENT;
  for (let i = 0; i < len - FILL_OFFSET; i++) if (bytes[f + FILL_OFFSET + i] !== fillByte(i)) return FRAME_BAD_CONTENT;
  if (dv.getUint16(f + OFF_FLAGS, true) !== 0 || dv.getUint16(f + OFF_RSVD, true) !== 0) return FRAME_BAD_CONTENT;
  return FRAME_OK;
}

/** Sequence number of a frame that passed {@link checkFrame}. */
export function probeSeq(dv: DataView, f: number): number {
  return dv.getUint32(f + OFF_SEQ_LO, true) + dv.getUint32(f + OFF_SEQ_HI, true) * 4294967296;
}
/** Queue id of a frame that passed {@link checkFrame}. */
export function probeQueue(dv: DataView, f: number): number {
  return dv.getUint16(f + OFF_QUEUE, true);
}

/** Swaps the source and destination MAC in place (what DPDK's macswap does; for tests and echo peers). */
export function swapMacs(u8: Uint8Array, f: number): void {
  for (let i = 0; i < 6; i++) {
    const t = u8[f + i]!;
    u8[f + i] = u8[f + 6 + i]!;
    u8[f + 6 + i] = t;
  }
}

/**
 * A light check for frames that are not ours: an IPv4 frame's header checksum
 * (testpmd's txonly computes it in software). Returns true for valid IPv4, false
 * for a bad IPv4 header, null when the frame is not IPv4.
 */
export function checkForeignIpv4(dv: DataView, f: number, len: number): boolean | null {
  if (len < ETH_HEADER_SIZE + 20 || dv.getUint16(f + 12, false) !== 0x0800) return null;
  const ip = f + ETH_HEADER_SIZE;
  const vihl = dv.getUint8(ip);
  const ihl = (vihl & 0xf) * 4;
  if (vihl >> 4 !== 4 || ihl < 20 || len < ETH_HEADER_SIZE + ihl) return false;
  let sum = 0;
  for (let o = 0; o < ihl; o += 2) sum += dv.getUint16(ip + o, false);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  if (sum !== 0xffff) return false;
  const totalLen = dv.getUint16(ip + 2, false);
  return totalLen >= ihl && ETH_HEADER_SIZE + totalLen <= len;
}
