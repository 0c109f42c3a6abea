/**
 * The shared memory between the ports of the `switch` module. Every port is a
 * separate vhost-user device served by its own worker thread, so a frame that
 * crosses ports crosses threads. Each ordered pair of ports (dst, src) has a
 * single-producer single-consumer ring of fixed-size frame slots in one
 * SharedArrayBuffer: the worker of `src` is the only producer, the worker of
 * `dst` the only consumer. No locks: the producer writes a slot then
 * publishes `head` (Atomics.store), the consumer reads `head` (Atomics.load),
 * reads the slot, then publishes `tail`. A full ring drops the frame (counted
 * in the ring's `drops` counter). After publishing, the producer bumps the
 * destination port's `bell` word and notifies it; the consumer waits on it
 * with Atomics.waitAsync when idle.
 *
 * Runs in any thread: no Node APIs.
 */

const MAGIC = 0x76735746; // 'vsWF'
const VERSION = 2; // 2: per-ring drops/pushed are float64 (were int32: negative past 2^31)

// Header words.
const H_MAGIC = 0;
const H_VERSION = 1;
const H_PORTS = 2;
const H_SLOTS = 3;
const H_SLOT_SIZE = 4;
const H_WORDS = 16;

// Per-port words (16 per port: a cache line).
const PORT_WORDS = 16;
/** 1 while a worker serves the port. */
const P_ATTACHED = 0;
/** Bumped by producers after each push to the port; the port's worker waits on it. */
const P_BELL = 1;
/** Bumped each time a worker attaches (a new connection on the port). */
const P_GENERATION = 2;

// Per-ring words (16 per ring).
const RING_WORDS = 16;
const R_HEAD = 0;
const R_TAIL = 1;
// Per-ring Float64 counters (index within the ring's 8 float64s; words 4-7), single writer: the
// producer. Float64, not Int32 words: an Int32 counter turns negative past 2^31 frames.
const RF_DROPS = 2;
const RF_PUSHED = 3;

/** Slot header: len u32 @0, flags u8 @4, csum_start u16 @6, csum_offset u16 @8. Data from @16. */
export const SLOT_LEN = 0;
export const SLOT_FLAGS = 4;
export const SLOT_CSUM_START = 6;
export const SLOT_CSUM_OFFSET = 8;
export const SLOT_DATA = 16;

/** Options of {@link SwitchFabric.create}. */
export interface SwitchFabricOptions {
  /** Number of ports (vhost-user sockets). */
  ports: number;
  /** Slots per (dst, src) ring, a power of two (default 256). */
  slots?: number;
  /** Largest frame a slot holds, bytes (default 1518: MTU 1500 + Ethernet + VLAN). */
  maxFrame?: number;
}

export class SwitchFabric {
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  /** The same header and ring area as Float64s (the per-ring counters). */
  readonly f64: Float64Array;
  readonly u8: Uint8Array;
  readonly ports: number;
  readonly slots: number;
  readonly slotSize: number;
  /** Largest frame a slot holds. */
  readonly maxFrame: number;
  private readonly mask: number;
  private readonly ringBase: number;
  private readonly dataBase: number;

  /** Allocates a fabric (main thread); pass `sab` to every port's worker. */
  static create(o: SwitchFabricOptions): SwitchFabric {
    const ports = o.ports;
    const slots = o.slots ?? 256;
    const maxFrame = o.maxFrame ?? 1518;
    if (!Number.isInteger(ports) || ports < 1 || ports > 64) throw new RangeError(`switch ports ${ports} outside 1..64`);
    if (!Number.isInteger(slots) || slots < 2 || slots > 65536 || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`switch slots ${slots} must be a power of two in 2..65536`);
    }
    if (!Number.isInteger(maxFrame) || maxFrame < 60 || maxFrame > 65553) throw new RangeError(`switch maxFrame ${maxFrame} outside 60..65553`);
    const slotSize = Math.ceil((SLOT_DATA + maxFrame) / 64) * 64;
    const { dataBase, bytes } = layout(ports, slots, slotSize);
    const sab = new SharedArrayBuffer(bytes);
    const i32 = new Int32Array(sab, 0, dataBase / 4);
    i32[H_MAGIC] = MAGIC;
    i32[H_VERSION] = VERSION;
    i32[H_PORTS] = ports;
    i32[H_SLOTS] = slots;
    i32[H_SLOT_SIZE] = slotSize;
    return new SwitchFabric(sab);
  }

  /** Opens a fabric created elsewhere (a worker). */
  constructor(sab: SharedArrayBuffer) {
    const head = new Int32Array(sab, 0, H_WORDS);
    if (head[H_MAGIC] !== MAGIC || head[H_VERSION] !== VERSION) throw new Error('not a switch fabric (bad magic or version)');
    this.sab = sab;
    this.ports = head[H_PORTS]!;
    this.slots = head[H_SLOTS]!;
    this.slotSize = head[H_SLOT_SIZE]!;
    this.maxFrame = this.slotSize - SLOT_DATA;
    this.mask = this.slots - 1;
    const l = layout(this.ports, this.slots, this.slotSize);
    if (sab.byteLength < l.bytes) throw new Error('switch fabric buffer too small');
    this.ringBase = l.ringBase;
    this.dataBase = l.dataBase;
    this.i32 = new Int32Array(sab, 0, l.dataBase / 4);
    this.f64 = new Float64Array(sab, 0, l.dataBase / 8);
    this.u8 = new Uint8Array(sab);
  }

  private ringWord(dst: number, src: number, w: number): number {
    return this.ringBase + (dst * this.ports + src) * RING_WORDS + w;
  }

  /** Index in {@link f64} of ring (dst, src)'s counter `k` (RF_*); ring words start 64-byte aligned. */
  private ringF64(dst: number, src: number, k: number): number {
    return (this.ringBase + (dst * this.ports + src) * RING_WORDS) / 2 + k;
  }

  /** Where ring (dst, src)'s counters live in {@link f64} (tests seed them there). */
  counterSlots(dst: number, src: number): { drops: number; pushed: number } {
    return { drops: this.ringF64(dst, src, RF_DROPS), pushed: this.ringF64(dst, src, RF_PUSHED) };
  }

  private slotOffset(dst: number, src: number, idx: number): number {
    return this.dataBase + ((dst * this.ports + src) * this.slots + (idx & this.mask)) * this.slotSize;
  }

  // -------------------------------------------------------------------------
  // Ports.

  /** Marks `port` served (the worker calls it when attached); returns the new generation. */
  attach(port: number): number {
    const base = H_WORDS + port * PORT_WORDS;
    Atomics.store(this.i32, base + P_ATTACHED, 1);
    return Atomics.add(this.i32, base + P_GENERATION, 1) + 1;
  }

  /** Marks `port` not served (its guest is gone): others stop sending to it. */
  detach(port: number): void {
    Atomics.store(this.i32, H_WORDS + port * PORT_WORDS + P_ATTACHED, 0);
  }

  isAttached(port: number): boolean {
    return Atomics.load(this.i32, H_WORDS + port * PORT_WORDS + P_ATTACHED) === 1;
  }

  /** Index of the port's bell word in {@link i32} (for Atomics.waitAsync). */
  bellIndex(port: number): number {
    return H_WORDS + port * PORT_WORDS + P_BELL;
  }

  // -------------------------------------------------------------------------
  // Producer side (the worker of `src`).

  /**
   * Byte offset in {@link u8} of the next free slot of ring (dst, src), or -1
   * when the ring is full (the drop is counted). Write the frame at
   * offset + SLOT_DATA, then {@link commit}.
   */
  reserve(dst: number, src: number): number {
    const i32 = this.i32;
    const head = i32[this.ringWord(dst, src, R_HEAD)]!; // only this thread writes head
    const tail = Atomics.load(i32, this.ringWord(dst, src, R_TAIL));
    if (((head - tail) | 0) >= this.slots) {
      this.f64[this.ringF64(dst, src, RF_DROPS)]!++;
      return -1;
    }
    return this.slotOffset(dst, src, head);
  }

  /** Publishes the reserved slot of ring (dst, src) holding `len` bytes and rings dst's bell. */
  commit(dst: number, src: number, slot: number, len: number, flags = 0, csumStart = 0, csumOffset = 0): void {
    const u8 = this.u8;
    u8[slot + SLOT_LEN] = len & 0xff;
    u8[slot + SLOT_LEN + 1] = (len >>> 8) & 0xff;
    u8[slot + SLOT_LEN + 2] = (len >>> 16) & 0xff;
    u8[slot + SLOT_LEN + 3] = 0;
    u8[slot + SLOT_FLAGS] = flags;
    u8[slot + SLOT_CSUM_START] = csumStart & 0xff;
    u8[slot + SLOT_CSUM_START + 1] = csumStart >>> 8;
    u8[slot + SLOT_CSUM_OFFSET] = csumOffset & 0xff;
    u8[slot + SLOT_CSUM_OFFSET + 1] = csumOffset >>> 8;
    const i32 = this.i32;
    const hw = this.ringWord(dst, src, R_HEAD);
    Atomics.store(i32, hw, (i32[hw]! + 1) | 0);
    this.f64[this.ringF64(dst, src, RF_PUSHED)]!++;
    const bell = H_WORDS + dst * PORT_WORDS + P_BELL;
    Atomics.add(i32, bell, 1);
    Atomics.notify(i32, bell, 1);
  }

  // -------------------------------------------------------------------------
  // Consumer side (the worker of `dst`).

  /** Byte offset of the oldest unconsumed slot of ring (dst, src), or -1 when empty. */
  peek(dst: number, src: number): number {
    const i32 = this.i32;
    const tail = i32[this.ringWord(dst, src, R_TAIL)]!; // only this thread writes tail
    const head = Atomics.load(i32, this.ringWord(dst, src, R_HEAD));
    if (head === tail) return -1;
    return this.slotOffset(dst, src, tail);
  }

  /** Frame length of a slot. */
  slotLength(slot: number): number {
    const u8 = this.u8;
    return (u8[slot + SLOT_LEN] as number) | ((u8[slot + SLOT_LEN + 1] as number) << 8) | ((u8[slot + SLOT_LEN + 2] as number) << 16);
  }

  slotFlags(slot: number): number {
    return this.u8[slot + SLOT_FLAGS] as number;
  }

  slotCsumStart(slot: number): number {
    return (this.u8[slot + SLOT_CSUM_START] as number) | ((this.u8[slot + SLOT_CSUM_START + 1] as number) << 8);
  }

  slotCsumOffset(slot: number): number {
    return (this.u8[slot + SLOT_CSUM_OFFSET] as number) | ((this.u8[slot + SLOT_CSUM_OFFSET + 1] as number) << 8);
  }

  /** Frees the oldest slot of ring (dst, src). */
  release(dst: number, src: number): void {
    const i32 = this.i32;
    const tw = this.ringWord(dst, src, R_TAIL);
    Atomics.store(i32, tw, (i32[tw]! + 1) | 0);
  }

  /** Drops everything queued for `dst` (a new guest on the port must not get the old one's frames). */
  flushInbound(dst: number): void {
    for (let src = 0; src < this.ports; src++) {
      Atomics.store(this.i32, this.ringWord(dst, src, R_TAIL), Atomics.load(this.i32, this.ringWord(dst, src, R_HEAD)));
    }
  }

  /** Frames dropped because ring (dst, src) was full. */
  drops(dst: number, src: number): number {
    return this.f64[this.ringF64(dst, src, RF_DROPS)]!;
  }

  /** Frames pushed into ring (dst, src). */
  pushed(dst: number, src: number): number {
    return this.f64[this.ringF64(dst, src, RF_PUSHED)]!;
  }
}

function layout(ports: number, slots: number, slotSize: number): { ringBase: number; dataBase: number; bytes: number } {
  const ringBase = H_WORDS + ports * PORT_WORDS;
  const words = ringBase + ports * ports * RING_WORDS;
  const dataBase = Math.ceil((words * 4) / 64) * 64;
  return { ringBase, dataBase, bytes: dataBase + ports * ports * slots * slotSize };
}
