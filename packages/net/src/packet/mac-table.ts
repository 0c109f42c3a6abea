/**
 * A learning switch's forwarding table: MAC address (48-bit number) -> port.
 * Entries age out after `ageMs` without being seen as a source. Bounded in size:
 * when full, the entry learned first is evicted, so a guest flooding random source
 * addresses cannot grow it without limit.
 *
 * Allocation-free after construction (it sits on the per-packet path of the
 * switch): open addressing with linear probing in typed arrays, and a ring of
 * (address, insertion number) in learning order for the eviction. A Map keyed
 * by 48-bit numbers would box every lookup key.
 */
const EMPTY = -1;

export class MacTable {
  private readonly mask: number;
  private readonly keys: Float64Array;
  private readonly ports: Int32Array;
  private readonly seenAt: Float64Array;
  /** Insertion number of the entry in each slot. */
  private readonly insertedAs: Float64Array;
  /** Learning order: address and insertion number, oldest at `head`. */
  private readonly orderMac: Float64Array;
  private readonly orderSeq: Float64Array;
  private head = 0;
  private queued = 0;
  private seq = 0;
  private count = 0;

  constructor(
    readonly capacity = 4096,
    readonly ageMs = 300_000,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`MacTable capacity must be >= 1, got ${capacity}`);
    let slots = 2;
    while (slots < capacity * 2) slots *= 2;
    this.mask = slots - 1;
    this.keys = new Float64Array(slots).fill(EMPTY);
    this.ports = new Int32Array(slots);
    this.seenAt = new Float64Array(slots);
    this.insertedAs = new Float64Array(slots);
    this.orderMac = new Float64Array(capacity);
    this.orderSeq = new Float64Array(capacity);
  }

  /** Records that `mac` was seen as a source on `port` at time `now` (ms). */
  learn(mac: number, port: number, now: number): void {
    let i = this.find(mac);
    if (i >= 0) {
      this.ports[i] = port;
      this.seenAt[i] = now;
      return;
    }
    if (this.count >= this.capacity) this.evictOldest();
    if (this.queued >= this.capacity) this.compactOrder();
    i = this.hash(mac);
    while (this.keys[i] !== EMPTY) i = (i + 1) & this.mask;
    const s = this.seq++;
    this.keys[i] = mac;
    this.ports[i] = port;
    this.seenAt[i] = now;
    this.insertedAs[i] = s;
    this.count++;
    const tail = (this.head + this.queued) % this.capacity;
    this.orderMac[tail] = mac;
    this.orderSeq[tail] = s;
    this.queued++;
  }

  /** The port `mac` was last seen on, or -1 if unknown or aged out. */
  lookup(mac: number, now: number): number {
    const i = this.find(mac);
    if (i < 0) return -1;
    if (now - this.seenAt[i]! > this.ageMs) {
      this.removeAt(i);
      return -1;
    }
    return this.ports[i]!;
  }

  /** Forgets every address learned on `port` (the port went away). */
  forgetPort(port: number): void {
    for (let i = 0; i <= this.mask; ) {
      // removeAt shifts later entries back into slot i: look at i again then.
      if (this.keys[i] !== EMPTY && this.ports[i] === port) this.removeAt(i);
      else i++;
    }
  }

  get size(): number {
    return this.count;
  }

  private hash(mac: number): number {
    // Mix the low 32 bits and the high 16 bits (exact: mac < 2^48).
    const lo = mac >>> 0;
    const hi = (mac / 4294967296) >>> 0;
    return (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 0) & this.mask;
  }

  private find(mac: number): number {
    let i = this.hash(mac);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac) return i;
      if (k === EMPTY) return -1;
      i = (i + 1) & this.mask;
    }
  }

  /** Deletes slot i with backward-shift deletion (no tombstones). */
  private removeAt(i: number): void {
    const keys = this.keys;
    keys[i] = EMPTY;
    this.count--;
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      const k = keys[j]!;
      if (k === EMPTY) return;
      const home = this.hash(k);
      // Move k back to i when i lies cyclically in [home, j).
      if (((j - home) & this.mask) >= ((j - i) & this.mask)) {
        keys[i] = k;
        this.ports[i] = this.ports[j]!;
        this.seenAt[i] = this.seenAt[j]!;
        this.insertedAs[i] = this.insertedAs[j]!;
        keys[j] = EMPTY;
        i = j;
      }
    }
  }

  /** Evicts the entry learned first (skipping order records of entries already gone). */
  private evictOldest(): void {
    while (this.queued > 0) {
      const mac = this.orderMac[this.head]!;
      const s = this.orderSeq[this.head]!;
      this.head = (this.head + 1) % this.capacity;
      this.queued--;
      const i = this.find(mac);
      if (i >= 0 && this.insertedAs[i] === s) {
        this.removeAt(i);
        return;
      }
    }
  }

  /** Drops order records of entries already gone (aged out, forgotten), in place. */
  private compactOrder(): void {
    let kept = 0;
    for (let n = 0; n < this.queued; n++) {
      const at = (this.head + n) % this.capacity;
      const mac = this.orderMac[at]!;
      const s = this.orderSeq[at]!;
      const i = this.find(mac);
      if (i < 0 || this.insertedAs[i] !== s) continue;
      const to = (this.head + kept) % this.capacity;
      this.orderMac[to] = mac;
      this.orderSeq[to] = s;
      kept++;
    }
    this.queued = kept;
  }
}
