import { describe, expect, it } from 'vitest';
import { modules, type DataPlaneError } from '@vhost-ts/workers';
import { countResources } from '../../test/support/leaks.js';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';
import { guestU16, manager, onCleanup, sleep, startDevice } from './harness.js';

describe('device destroy', () => {
  it('stop() while busy joins every worker, returns the indices, and leaks no fd or worker', async () => {
    const before = countResources();
    const guest = new FakeGuestMemory();
    const rings = [0, 1, 2, 3].map((i) => new FakeGuestRing(guest, i, { size: 64 }));
    const dev = await startDevice(guest, rings, { module: modules.slow, moduleOptions: { spinMs: '2' }, queuesPerWorker: 2, burstSize: 4 });
    expect(dev.workerCount).toBe(2);
    let running = true;
    const gen = (async () => {
      while (running) {
        for (const r of rings) {
          r.reap();
          r.post(8, 64);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    expect(await until(() => rings.every((r) => r.returned > 10), 10_000)).toBe(true);
    const t0 = performance.now();
    const indices = await dev.stop();
    const took = performance.now() - t0;
    running = false;
    await gen;
    expect(took).toBeLessThan(3000);
    expect(indices.map((x) => x.index)).toEqual([0, 1, 2, 3]);
    for (const x of indices) expect(x.lastAvailIdx).toBe(guestU16(guest, rings[x.index]!.usedGpa + 2));
    expect(dev.stats().workers.every((w) => w.state === 'exited')).toBe(true);
    expect(manager.list()).not.toContain(dev);
    await expect(dev.pause()).rejects.toThrow(/stopped/);
    // stop() is idempotent.
    expect(await dev.stop()).toBe(indices);
    for (const r of rings) r.close();
    expect(await until(() => countResources().fds <= before.fds, 5000)).toBe(true);
  });

  it('a worker stuck in a syscall is terminated or abandoned within the timeouts: stop() never hangs', async () => {
    const guest = new FakeGuestMemory();
    const ring = new FakeGuestRing(guest, 0, { size: 64 });
    onCleanup(() => ring.close());
    const dev = await startDevice(guest, [ring], {
      module: modules.slow,
      moduleOptions: { syscallMs: '1500' },
      ackTimeoutMs: 300,
    });
    const errors: DataPlaneError[] = [];
    dev.onError((e) => errors.push(e));
    ring.post(1, 64);
    // The worker is now blocked in spawnSync (a syscall terminate() cannot interrupt).
    await sleep(100);
    const t0 = performance.now();
    await dev.stop();
    expect(performance.now() - t0).toBeLessThan(1400);
    expect(errors.some((e) => e.reason === 'timeout')).toBe(true);
  });

  it('a module that fails to load rejects startDevice and leaves no worker behind', async () => {
    const guest = new FakeGuestMemory();
    await expect(
      manager.startDevice({ module: new URL('./does-not-exist.js', modules.sink), features: 0n, regions: guest.regions(), numRings: 1 }),
    ).rejects.toThrow(/does-not-exist|Cannot find/);
    expect(manager.list()).toEqual([]);
  });
});

describe('device start failures', () => {
  it('a kick fd epoll cannot watch (/dev/null, a memfd): startDevice rejects naming the fd, and no worker, poller or device is left', async () => {
    const { openSync, closeSync } = await import('node:fs');
    const { native } = await import('@vhost-ts/native');
    const nul = openSync('/dev/null', 'r');
    const memfd = native.memfdCreate('not-pollable');
    onCleanup(() => {
      closeSync(nul);
      native.close(memfd);
    });
    const guest = new FakeGuestMemory();
    const rings = [0, 1].map((i) => new FakeGuestRing(guest, i, { size: 64 }));
    onCleanup(() => rings.forEach((r) => r.close()));
    for (const bad of [nul, memfd]) {
      const devicesBefore = manager.list().length;
      // vring 0's poller is created (and started) before vring 1's fails: it must be closed too.
      const specs = [rings[0]!.spec(), { ...rings[1]!.spec(), kickFd: bad }];
      await expect(manager.startDevice({ module: modules.sink, features: 0n, regions: guest.regions(), rings: specs, queuesPerWorker: 2, spinUs: 0 })).rejects.toThrow(
        new RegExp(`cannot watch kick fd ${bad} of vring 1`),
      );
      expect(manager.list().length).toBe(devicesBefore);
      // The good ring's kick fd is no longer watched: a new poller on it can be created.
      const p = new native.Poller(rings[0]!.kickFd!, () => undefined, true);
      p.close();
    }
    // Closing the fds the failed devices saw must not disturb the loop (a leaked poller made libuv abort).
    native.eventfdWrite(rings[0]!.kickFd!, 1);
    await sleep(50);
  });
});
