import { describe, expect, it } from 'vitest';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';
import { onCleanup, startDevice } from './harness.js';

describe('doorbell', () => {
  it('a kick through the eventfd wakes a sleeping worker, which processes the chains and writes the call eventfd', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring]);
    // Let the worker go to sleep first.
    expect(await until(() => dev.stats().workers[0]!.sleeps >= 1)).toBe(true);
    const wakeupsBefore = dev.stats().workers[0]!.wakeups;
    expect(ring.post(3, 100)).toBe(3);
    expect(ring.kicks).toBe(1);
    let calls = 0;
    expect(await until(() => ((calls += ring.calls()), ring.reap(), ring.returned === 3))).toBe(true);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(ring.outstanding.size).toBe(0);
    // Counters are published right after the used index: they may trail the guest by a moment.
    expect(await until(() => dev.stats().workers[0]!.rings[0]!.chains === 3)).toBe(true);
    // The worker may have woken on the kick fd itself (kickWait) before the main thread's poller
    // drained and counted the kick: the count follows shortly.
    expect(await until(() => dev.stats().workers[0]!.rings[0]!.kicks === 1)).toBe(true);
    const st = dev.stats().workers[0]!;
    expect(st.wakeups).toBeGreaterThan(wakeupsBefore);
    const rs = st.rings[0]!;
    expect(rs.kicks).toBe(1);
    expect(rs.chains).toBe(3);
    expect(rs.bytes).toBe(300);
    expect(rs.calls).toBeGreaterThanOrEqual(1);
    expect(rs.state).toBe('running');
  });

  for (const kickWait of [true, false]) {
    it(`with the main thread busy, a kick wakes the sleeping worker ${kickWait ? 'directly (kickWait)' : 'only once the main thread is free (kickWait off)'}`, async () => {
      const guest = new FakeGuestMemory();
      const ring = new FakeGuestRing(guest, 0);
      onCleanup(() => ring.close());
      const dev = await startDevice(guest, [ring], { kickWait });
      expect(await until(() => dev.stats().workers[0]!.sleeps >= 1)).toBe(true);
      expect(ring.post(3, 100)).toBe(3);
      expect(ring.kicks).toBe(1);
      // Block this (the main) thread: its kick poller cannot run before the loop ends.
      const t0 = performance.now();
      let served = false;
      while (performance.now() - t0 < 1000) {
        ring.reap();
        if (ring.returned === 3) {
          served = true;
          break;
        }
      }
      expect(served).toBe(kickWait);
      // Either way every chain comes back once the main thread runs again.
      expect(await until(() => (ring.reap(), ring.returned === 3))).toBe(true);
    });
  }

  it('a ring without a kick fd is polled (polling mode)', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { kick: false });
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring], { pollIntervalMs: 2 });
    expect(await until(() => dev.stats().workers[0]!.sleeps >= 1)).toBe(true);
    ring.post(5, 64);
    expect(await until(() => (ring.reap(), ring.returned === 5))).toBe(true);
    expect(dev.stats().workers[0]!.timeouts).toBeGreaterThanOrEqual(1);
    expect(dev.stats().workers[0]!.rings[0]!.kicks).toBe(0);
  });

  it('honours notification suppression: no call while the guest sets NO_INTERRUPT', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring]);
    ring.driver.disableCallbacks();
    ring.post(4, 64);
    expect(await until(() => (ring.reap(), ring.returned === 4))).toBe(true);
    expect(ring.calls()).toBe(0);
    expect(await until(() => dev.stats().workers[0]!.rings[0]!.chains === 4)).toBe(true);
    const rs = dev.stats().workers[0]!.rings[0]!;
    expect(rs.calls).toBe(0);
    expect(rs.suppressed).toBeGreaterThanOrEqual(1);
  });
});
