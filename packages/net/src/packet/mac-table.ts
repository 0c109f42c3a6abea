/**
 * A learning switch's forwarding table: MAC address (48-bit number) -> port.
 * Entries age out after `ageMs` without being seen as a source. Bounded in size:
 * when full, the entry learned first is evicted, so a guest flooding random source
 * addresses cannot grow it without limit.
 */
export class MacTable {
  private readonly ports = new Map<number, { port: number; seenAt: number }>();

  constructor(
    readonly capacity = 4096,
    readonly ageMs = 300_000,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`MacTable capacity must be >= 1, got ${capacity}`);
  }

  /** Records that `mac` was seen as a source on `port` at time `now` (ms). */
  learn(mac: number, port: number, now: number): void {
    const entry = this.ports.get(mac);
    if (entry !== undefined) {
      entry.port = port;
      entry.seenAt = now;
      return;
    }
    if (this.ports.size >= this.capacity) {
      // Map iteration is insertion order: the first key is the oldest insert.
      const oldest = this.ports.keys().next();
      if (oldest.done !== true) this.ports.delete(oldest.value);
    }
    this.ports.set(mac, { port, seenAt: now });
  }

  /** The port `mac` was last seen on, or -1 if unknown or aged out. */
  lookup(mac: number, now: number): number {
    const entry = this.ports.get(mac);
    if (entry === undefined) return -1;
    if (now - entry.seenAt > this.ageMs) {
      this.ports.delete(mac);
      return -1;
    }
    return entry.port;
  }

  /** Forgets every address learned on `port` (the port went away). */
  forgetPort(port: number): void {
    for (const [mac, e] of this.ports) if (e.port === port) this.ports.delete(mac);
  }

  get size(): number {
    return this.ports.size;
  }
}
