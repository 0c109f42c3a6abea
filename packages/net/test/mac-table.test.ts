/**
 * MacTable (typed-array open addressing) against a reference model (a Map in
 * learning order): random learn / lookup / forgetPort sequences, including
 * evictions, aging and re-learning of deleted addresses.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MacTable } from '@vhost-ts/net';

class Reference {
  readonly m = new Map<number, { port: number; seenAt: number }>();
  constructor(readonly capacity: number, readonly ageMs: number) {}
  learn(mac: number, port: number, now: number): void {
    const e = this.m.get(mac);
    if (e !== undefined) {
      e.port = port;
      e.seenAt = now;
      return;
    }
    if (this.m.size >= this.capacity) this.m.delete(this.m.keys().next().value!);
    this.m.set(mac, { port, seenAt: now });
  }
  lookup(mac: number, now: number): number {
    const e = this.m.get(mac);
    if (e === undefined) return -1;
    if (now - e.seenAt > this.ageMs) {
      this.m.delete(mac);
      return -1;
    }
    return e.port;
  }
  forgetPort(port: number): void {
    for (const [k, e] of this.m) if (e.port === port) this.m.delete(k);
  }
}

describe('MacTable vs a reference model', () => {
  it('keeps an address reachable when the entry before it in its probe run is evicted', () => {
    // 0x525400000000 and 0x525400000004 share a home slot in a 4-slot table (capacity 2).
    const t = new MacTable(2, 1000);
    t.learn(0x525400000000, 1, 0);
    t.learn(0x525400000004, 2, 0);
    t.learn(0x020000000001, 3, 0); // evicts the first
    expect(t.lookup(0x525400000000, 1)).toBe(-1);
    expect(t.lookup(0x525400000004, 1)).toBe(2);
    expect(t.lookup(0x020000000001, 1)).toBe(3);
  });

  it('agrees on every operation', () => {
    // Few distinct addresses (some near 2^48) so that collisions, re-learning and evictions happen.
    const macs = [0, 1, 2, 3, 0x525400123456, 0xffffffffffff, 0x020000000001, 0x800000000000, 2 ** 32, 2 ** 32 + 1, 12345678, 0x0a0b0c0d0e0f];
    for (let i = 0; i < 16; i++) macs.push(0x525400000000 + i, 0x525400000000 + i * 0x10001);
    const op = fc.oneof(
      fc.record({ k: fc.constant('learn' as const), mac: fc.constantFrom(...macs), port: fc.integer({ min: 0, max: 3 }), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('lookup' as const), mac: fc.constantFrom(...macs), dt: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ k: fc.constant('forget' as const), port: fc.integer({ min: 0, max: 3 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.array(op, { minLength: 50, maxLength: 300 }), (capacity, ops) => {
        const t = new MacTable(capacity, 1000);
        const r = new Reference(capacity, 1000);
        let now = 0;
        for (const o of ops) {
          if (o.k === 'learn') {
            now += o.dt;
            t.learn(o.mac, o.port, now);
            r.learn(o.mac, o.port, now);
          } else if (o.k === 'lookup') {
            now += o.dt;
            expect(t.lookup(o.mac, now)).toBe(r.lookup(o.mac, now));
          } else {
            t.forgetPort(o.port);
            r.forgetPort(o.port);
          }
          expect(t.size).toBe(r.m.size);
        }
      }),
      { numRuns: 300 },
    );
  });
});
