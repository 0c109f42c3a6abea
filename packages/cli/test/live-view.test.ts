import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { computeFrame, formatLine, LiveView, si, type MetricSpec } from '@vhost-ts/cli/live-view';

const metrics: MetricSpec[] = [
  { key: 'packets', label: 'pps', kind: 'rate' },
  { key: 'bytes', label: 'bps', kind: 'rate', unit: 'bits' },
  { key: 'drops', label: 'drops', kind: 'total' },
];

describe('live view', () => {
  it('computes per-second rates from cumulative counters', () => {
    const f = computeFrame(metrics, { q0: { packets: 100, bytes: 1000, drops: 1 } }, { q0: { packets: 1100, bytes: 3000, drops: 2 } }, 500);
    expect(f).toEqual({ q0: { pps: 2000, bps: 4000, drops: 2 } });
  });
  it('never reports a negative rate after a counter reset', () => {
    const f = computeFrame(metrics, { q0: { packets: 100 } }, { q0: { packets: 5 } }, 1000);
    expect(f.q0?.pps).toBe(0);
  });
  it('formats SI units and one terminal line', () => {
    expect(si(1_234_567)).toBe('1.23M');
    expect(si(12)).toBe('12');
    expect(formatLine(metrics, { q0: { pps: 2e6, bps: 1.25e8, drops: 0 } })).toBe('q0: 2.00M pps 1.00Gbit/s 0 drops');
  });
  it('writes JSON lines when not on a terminal', async () => {
    const out = new PassThrough();
    let n = 0;
    const view = new LiveView({ metrics, intervalMs: 1000, out, tags: { device: 'd0' }, sample: () => ({ q1: { packets: (n += 10), bytes: 0, drops: 0 } }) });
    await view.tick();
    const line = JSON.parse(String(out.read()));
    expect(line.device).toBe('d0');
    expect(line.queues.q1.drops).toBe(0);
    expect(typeof line.ts).toBe('string');
  });
  it('rejects a zero interval', () => {
    expect(() => new LiveView({ metrics, intervalMs: 0, sample: () => ({}) })).toThrow(/interval/);
  });
});
