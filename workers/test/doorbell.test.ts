import { afterEach, describe, expect, it } from 'vitest';
import { QueueWorkerManager, modules, type DeviceWorkers } from '@vhost-ts/workers';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';

const manager = new QueueWorkerManager();
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startSink(rings: FakeGuestRing[], guest: FakeGuestMemory, extra: Partial<Parameters<QueueWorkerManager['startDevice']>[0]> = {}): Promise<DeviceWorkers> {
  const dev = await manager.startDevice({
    module: modules.sink,
    features: 0n,
    regions: guest.regions(),
    rings: rings.map((r) => r.spec()),
    spinUs: 0,
    ...extra,
  });
  cleanups.push(() => dev.stop().then(() => undefined));
  return dev;
}

describe('doorbell', () => {
  it('a kick through the eventfd wakes a sleeping worker, which processes the chain and writes the call eventfd', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    cleanups.push(() => ring.close());
    const dev = await startSink([ring], guest);
    // Let the worker go to sleep.
    expect(await until(() => dev.stats().workers[0]!.sleeps >= 1)).toBe(true);
    const sleepsBefore = dev.stats().workers[0]!.sleeps;
    expect(ring.post(3, 100)).toBe(3);
    expect(ring.kicks).toBe(1);
    let calls = 0;
    expect(await until(() => ((calls += ring.calls()), ring.reap(), ring.returned === 3))).toBe(true);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(ring.outstanding.size).toBe(0);
    const st = dev.stats().workers[0]!;
    expect(st.wakeups).toBeGreaterThanOrEqual(1);
    expect(st.sleeps).toBeGreaterThanOrEqual(sleepsBefore);
    const rs = st.rings[0]!;
    expect(rs.kicks).toBeGreaterThanOrEqual(1);
    expect(rs.chains).toBe(3);
    expect(rs.bytes).toBe(300);
    expect(rs.calls).toBeGreaterThanOrEqual(1);
    expect(rs.state).toBe('running');
  });
});
