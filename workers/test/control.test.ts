import { describe, expect, it } from 'vitest';
import { modules } from '@vhost-ts/workers';
import { FakeGuestMemory, FakeGuestRing, packedBase, until } from './guest.js';
import { guestU16, onCleanup, sleep, startDevice } from './harness.js';

/** Posts chains continuously (kicking as the driver decides) until stopped. */
function traffic(ring: FakeGuestRing, perTick = 8): { stop: () => Promise<void> } {
  let running = true;
  const done = (async () => {
    while (running) {
      ring.reap();
      ring.post(perTick, 64);
      await new Promise((r) => setImmediate(r));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe('ring stop and restart', () => {
  it('stopRings returns the next avail index after the worker stopped touching the ring; a restart at that base loses and duplicates nothing', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { size: 128 });
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring], { module: modules.slow, moduleOptions: { spinMs: '1' }, burstSize: 8 });
    const t = traffic(ring);
    await until(() => ring.returned > 200, 10_000);
    const [idx] = await dev.stopRings([0]);
    await t.stop();
    expect(idx!.index).toBe(0);
    // Split ring, synchronous module: every popped chain was completed, so
    // last avail == used.idx in guest memory.
    const usedIdx = guestU16(guest, ring.usedGpa + 2);
    expect(idx!.lastAvailIdx).toBe(usedIdx);
    expect(idx!.lastUsedIdx).toBe(usedIdx);
    expect(dev.stats().workers[0]!.rings[0]!.state).toBe('stopped');
    // The worker does not touch the ring any more: more chains and kicks change nothing.
    ring.post(4, 64);
    ring.kick();
    await sleep(50);
    expect(guestU16(guest, ring.usedGpa + 2)).toBe(usedIdx);
    // Everything the guest made available and the device did not consume is still outstanding.
    ring.reap();
    const availIdx = guestU16(guest, ring.availGpa + 2);
    expect(ring.outstanding.size).toBe((availIdx - idx!.lastAvailIdx) & 0xffff);
    // Restart at the returned base: the rest comes back exactly once.
    // No kick: a started ring is polled once (and notifications re-enabled before the worker sleeps).
    await dev.startRings([{ ...ring.spec(), lastAvailIdx: idx!.lastAvailIdx }]);
    expect(await until(() => (ring.reap(), ring.outstanding.size === 0), 10_000)).toBe(true);
    expect(ring.returned).toBe(ring.posted);
  });

  it('packed ring with EVENT_IDX: traffic across several wraps, stop with wrap counters, restart at that base', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { kind: 'packed', size: 100, eventIdx: true });
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring], { features: 1n << 29n | 1n << 34n, burstSize: 16 });
    const t = traffic(ring, 7);
    await until(() => ring.returned > 450, 10_000);
    const [idx] = await dev.stopRings([0]);
    await t.stop();
    ring.reap();
    // Everything the device consumed came back; wrap counters flipped as many times as the ring wrapped.
    const consumed = ring.posted - ring.outstanding.size;
    expect(ring.returned).toBe(consumed);
    expect(idx!.lastAvailIdx).toBe(consumed % 100);
    expect(idx!.availWrap).toBe(Math.floor(consumed / 100) % 2 === 0);
    expect(idx!.lastUsedIdx).toBe(idx!.lastAvailIdx);
    expect(idx!.usedWrap).toBe(idx!.availWrap);
    await dev.startRings([{ ...ring.spec(), ...packedBase(0), lastAvailIdx: idx!.lastAvailIdx, availWrap: idx!.availWrap, lastUsedIdx: idx!.lastUsedIdx, usedWrap: idx!.usedWrap }]);
    ring.kick();
    const t2 = traffic(ring, 5);
    const target = ring.posted + 300;
    await until(() => ring.posted > target, 10_000);
    await t2.stop();
    expect(await until(() => (ring.reap(), ring.outstanding.size === 0), 10_000)).toBe(true);
    expect(ring.returned).toBe(ring.posted);
  });

  it('pauseRings (vring disabled) keeps the ring untouched until resumeRings', async () => {
    const guest = new FakeGuestMemory();
    const a = new FakeGuestRing(guest, 0);
    const b = new FakeGuestRing(guest, 1);
    onCleanup(() => (a.close(), b.close()));
    const dev = await startDevice(guest, [a, b], { queuesPerWorker: 2 });
    expect(dev.workerCount).toBe(1);
    const [ia] = await dev.pauseRings([0]);
    expect(ia!.index).toBe(0);
    a.post(3, 64);
    b.post(3, 64);
    expect(await until(() => (b.reap(), b.returned === 3))).toBe(true);
    await sleep(30);
    a.reap();
    expect(a.returned).toBe(0);
    expect(dev.stats().workers[0]!.rings[0]!.state).toBe('paused');
    await dev.resumeRings([0]);
    a.kick();
    expect(await until(() => (a.reap(), a.returned === 3))).toBe(true);
  });

  it('setCallFd switches the call eventfd; the old one is not written after it resolves', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0);
    const { native } = await import('@vhost-ts/native');
    const newCall = native.eventfdCreate(0);
    onCleanup(() => (ring.close(), native.close(newCall)));
    const dev = await startDevice(guest, [ring]);
    ring.post(1, 64);
    expect(await until(() => (ring.reap(), ring.returned === 1))).toBe(true);
    await until(() => ring.calls() > 0);
    await dev.setCallFd(0, newCall);
    ring.post(1, 64);
    expect(await until(() => (ring.reap(), ring.returned === 2))).toBe(true);
    expect(await until(() => native.eventfdRead(newCall) > 0)).toBe(true);
    expect(ring.calls()).toBe(0);
  });
});
