import { describe, expect, it } from 'vitest';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';
import { onCleanup, startDevice } from './harness.js';

describe('counters and rich control', () => {
  it('counters are readable from the main thread while the worker runs, and grow', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { size: 128 });
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring], { burstSize: 8 });
    let running = true;
    const gen = (async () => {
      while (running) {
        ring.reap();
        ring.post(16, 100);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = seen.at(-1) ?? 0;
      expect(await until(() => dev.stats().workers[0]!.rings[0]!.chains > before + 20, 10_000)).toBe(true);
      const st = dev.stats().workers[0]!;
      expect(st.state).toBe('running');
      seen.push(st.rings[0]!.chains);
    }
    running = false;
    await gen;
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
    await until(() => (ring.reap(), ring.outstanding.size === 0));
    expect(await until(() => dev.stats().workers[0]!.rings[0]!.chains === ring.returned)).toBe(true);
    const rs = dev.stats().workers[0]!.rings[0]!;
    expect(rs.bytes).toBe(ring.returned * 100);
    expect(rs.descriptors).toBe(ring.returned);
    expect(rs.bursts).toBeGreaterThan(0);
    expect(rs.bursts).toBeLessThanOrEqual(rs.chains);
    expect(rs.indices.lastAvailIdx).toBe(ring.returned & 0xffff);
    // Module statistics through comlink.
    expect(await dev.remote(0).moduleStats()).toEqual({ chains: ring.returned, bytes: ring.returned * 100 });
    await dev.remote(0).call('reset');
    expect(await dev.remote(0).moduleStats()).toEqual({ chains: 0, bytes: 0 });
    await expect(dev.remote(0).configure({ a: '1' })).rejects.toThrow(/no configure/);
  });

  it('a pinned worker runs on its CPU (sched_getaffinity inside the worker)', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    onCleanup(() => ring.close());
    // Pinned, but no spinning: tests share two cores.
    const dev = await startDevice(guest, [ring], { cpus: [1], spinUs: 0 });
    expect(await dev.remote(0).affinity()).toEqual([1]);
    expect(dev.stats().workers[0]!.cpu).toBe(1);
    const tid = await dev.remote(0).tid();
    expect(tid).toBeGreaterThan(0);
    expect(tid).not.toBe(process.pid);
    ring.post(4, 64);
    expect(await until(() => (ring.reap(), ring.returned === 4))).toBe(true);
  });

  it('comlink calls to a sleeping worker are always served (no lost service poke)', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring]);
    const remote = dev.remote(0);
    const tid = await remote.tid();
    const t0 = performance.now();
    for (let i = 0; i < 500; i++) {
      const got = await Promise.race([remote.tid(), new Promise<number>((r) => setTimeout(() => r(-1), 2000))]);
      expect(got).toBe(tid);
    }
    expect(performance.now() - t0).toBeLessThan(20_000);
    expect(dev.stats().workers[0]!.yields).toBeGreaterThan(100);
  });
});
