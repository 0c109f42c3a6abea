import { describe, expect, it } from 'vitest';
import { QueueCounters, SequenceTracker, summarize, WINDOW } from '@vhost-ts/frontend/net/accounting';

describe('SequenceTracker', () => {
  it('counts an in-order stream as unique with no loss', () => {
    const t = new SequenceTracker();
    for (let s = 0; s < 1000; s++) expect(t.record(s)).toBe(0);
    expect(t.unique).toBe(1000);
    expect(t.lost(1000)).toBe(0);
    expect(t.gaps).toBe(0);
    expect(t.duplicated + t.reordered + t.late).toBe(0);
  });

  it('counts loss, duplicates and reordering', () => {
    const t = new SequenceTracker();
    for (const s of [0, 1, 3, 2, 2, 5, 4, 4, 7]) t.record(s);
    // unique: 0 1 2 3 4 5 7 -> 7; missing: 6; dups: 2, 4; reordered: 2, 4 arrived after 3, 5
    expect(t.unique).toBe(7);
    expect(t.duplicated).toBe(2);
    expect(t.reordered).toBe(2);
    expect(t.gaps).toBe(1);
    expect(t.lost(8)).toBe(1);
    expect(t.lost(10)).toBe(3);
  });

  it('remembers a window and counts older arrivals as late, not unique', () => {
    const t = new SequenceTracker();
    t.record(0);
    t.record(WINDOW + 10);
    expect(t.record(5)).toBe(3);
    expect(t.late).toBe(1);
    expect(t.record(WINDOW + 5)).toBe(1);
    expect(t.record(WINDOW + 5)).toBe(2);
    expect(t.unique).toBe(3);
  });

  it('counts past 2^32 exactly (its numbers are float64 slots, not number fields)', () => {
    const t = new SequenceTracker();
    t.next = 2 ** 40;
    t.unique = 2 ** 40;
    expect([2 ** 40, 2 ** 40 + 2, 2 ** 40 + 1, 2 ** 40 + 1].map((s) => t.record(s))).toEqual([0, 1, 1, 2]);
    expect([t.next, t.unique, t.reordered, t.duplicated, t.late, t.gaps]).toEqual([2 ** 40 + 3, 2 ** 40 + 3, 1, 1, 0, 0]);
  });

  it('a window slide clears old bits (no false duplicates after wrap of the bitmap)', () => {
    const t = new SequenceTracker();
    for (let s = 0; s < 3 * WINDOW; s += 7) t.record(s);
    for (let s = 1; s < 3 * WINDOW; s += 7) t.record(s); // mostly late, never duplicates
    expect(t.duplicated).toBe(0);
  });

  it('fuzz: a random permutation with dups matches a Set-based model within the window', () => {
    let x = 12345;
    const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const t = new SequenceTracker();
    const seen = new Set<number>();
    let dups = 0;
    const n = 5000;
    const order: number[] = [];
    for (let s = 0; s < n; s++) if (rnd() > 0.05) order.push(s);
    for (let i = 0; i < order.length; i++) {
      const j = Math.min(order.length - 1, i + Math.floor(rnd() * 8));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const s of order) {
      const times = rnd() < 0.03 ? 2 : 1;
      for (let k = 0; k < times; k++) {
        t.record(s);
        if (seen.has(s)) dups++;
        seen.add(s);
      }
    }
    expect(t.unique).toBe(seen.size);
    expect(t.duplicated).toBe(dups);
    expect(t.lost(n)).toBe(n - seen.size);
  });
});

describe('summarize', () => {
  it('sums queues and computes loss per transmitting stream (a corrupted frame is bad, not lost)', () => {
    const c0 = new QueueCounters();
    const c1 = new QueueCounters();
    c0.sent = 10; c0.received = 9; c0.bad = 1;
    c1.sent = 5; c1.received = 5;
    const t0 = new SequenceTracker();
    const t1 = new SequenceTracker();
    for (let s = 0; s < 8; s++) t0.record(s);
    for (let s = 0; s < 5; s++) t1.record(s);
    const sum = summarize([c0, c1], [t0, t1], true);
    // queue 0: 10 sent, 8 distinct came back, 1 came back corrupted -> 1 lost.
    expect(sum).toMatchObject({ sent: 15, received: 14, lost: 1, bad: 1, duplicated: 0 });
    expect(sum.queues[0]).toMatchObject({ sent: 10, lost: 1 });
    expect(summarize([c0, c1], [t0, t1], false).lost).toBe(0);
  });
});
