import { describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { DirtyLog } from '@vhost-ts/virtio';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';
import { onCleanup, startDevice } from './harness.js';

describe('memory table swap', () => {
  it('pause, new region views, resume under traffic: no lost or duplicated chain, old mappings released', async () => {
    const bytes = 4 << 20;
    const fd = native.memfdCreate('workers-test-guest');
    native.ftruncate(fd, bytes);
    onCleanup(() => native.close(fd));
    // The guest uses one mapping; the device gets another mapping of the same pages,
    // replaced (and the old one released) on every swap.
    const guest = new FakeGuestMemory(bytes, 0x100000, native.mmap(fd, 0, bytes));
    const rings = [new FakeGuestRing(guest, 0, { size: 256 }), new FakeGuestRing(guest, 1, { size: 256 })];
    onCleanup(() => rings.forEach((r) => r.close()));
    let deviceMap = native.mmap(fd, 0, bytes);
    const dev = await startDevice(guest, rings, {
      regions: [{ gpa: guest.gpa, size: bytes, sab: deviceMap }],
      queuesPerWorker: 1,
      burstSize: 16,
    });
    const errors: string[] = [];
    dev.onError((e) => errors.push(e.message));

    let running = true;
    const gen = (async () => {
      while (running) {
        for (const r of rings) {
          r.reap();
          r.post(16, 128);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();

    for (let swap = 0; swap < 10; swap++) {
      const before = rings.map((r) => r.returned);
      // Traffic flows between swaps.
      expect(await until(() => rings.every((r, i) => r.returned > before[i]! + 50), 10_000)).toBe(true);
      await dev.pause();
      const next = native.mmap(fd, 0, bytes);
      await dev.setMemory([{ gpa: guest.gpa, size: bytes, sab: next }]);
      // Every worker acknowledged: the old mapping can go (stale views would read zeros and break the ring).
      native.release(deviceMap);
      deviceMap = next;
      await dev.resume();
    }
    running = false;
    await gen;
    for (const r of rings) r.kick();
    expect(await until(() => rings.every((r) => (r.reap(), r.outstanding.size === 0)), 10_000)).toBe(true);
    for (const r of rings) {
      expect(r.returned).toBe(r.posted);
      expect(r.posted).toBeGreaterThan(500);
    }
    expect(errors).toEqual([]);
    expect(dev.stats().workers.every((w) => w.state === 'running' && w.rings.every((r) => r.state === 'running'))).toBe(true);
    await dev.stop();
    native.release(deviceMap);
    native.release(guest.sab);
  });

  it('dirty logging: used-ring writes are logged while VHOST_F_LOG_ALL is negotiated, not after it is cleared', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { size: 64 });
    onCleanup(() => ring.close());
    const LOG_ALL = 1n << 26n;
    const logSab = new SharedArrayBuffer(Math.ceil((guest.gpa + guest.sab.byteLength) / 4096 / 8));
    const log = new DirtyLog(logSab);
    const dev = await startDevice(guest, [ring], {
      features: LOG_ALL,
      log: { sab: logSab },
      rings: [{ ...ring.spec(), logUsedGpa: ring.usedGpa }],
    });
    ring.post(4, 64);
    expect(await until(() => (ring.reap(), ring.returned === 4))).toBe(true);
    expect(await until(() => log.isDirty(ring.usedGpa))).toBe(true);
    // Only the used ring's pages (used elements + used.idx) were written by the device.
    for (const page of log.dirtyPages()) {
      expect(page + 4096 > ring.usedGpa && page < ring.usedGpa + 6 + 8 * 64).toBe(true);
    }
    await dev.setFeatures(0n);
    new Uint8Array(logSab).fill(0);
    ring.post(4, 64);
    expect(await until(() => (ring.reap(), ring.returned === 8))).toBe(true);
    expect(log.dirtyPages()).toEqual([]);
  });
});
