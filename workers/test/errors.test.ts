import { describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { modules, type DataPlaneError } from '@vhost-ts/workers';
import { FakeGuestMemory, FakeGuestRing, until } from './guest.js';
import { onCleanup, startDevice } from './harness.js';

describe('error isolation', () => {
  it('a throwing module breaks its own device (state, errors counter, err eventfd, onError); another device keeps running', async () => {
    const guestA = new FakeGuestMemory();
    const guestB = new FakeGuestMemory();
    const a = new FakeGuestRing(guestA, 0);
    const b = new FakeGuestRing(guestB, 0);
    const errFd = native.eventfdCreate(0);
    onCleanup(() => (a.close(), b.close(), native.close(errFd)));
    const devA = await startDevice(guestA, [a], { id: 'A', module: modules.fail, moduleOptions: { marker: '7' } });
    devA.onError(() => undefined);
    await devA.setErrFd(0, errFd);
    const devB = await startDevice(guestB, [b], { id: 'B' });
    const errorsA: DataPlaneError[] = [];
    const errorsB: DataPlaneError[] = [];
    devA.onError((e) => errorsA.push(e));
    devB.onError((e) => errorsB.push(e));

    a.post(2, 64);
    expect(await until(() => (a.reap(), a.returned === 2))).toBe(true);
    a.post(1, 64, 0x11, 7); // the marker
    expect(await until(() => errorsA.length > 0)).toBe(true);
    expect(errorsA[0]).toMatchObject({ deviceId: 'A', ringIndex: 0, reason: 'module', code: 'Error' });
    expect(errorsA[0]!.message).toMatch(/marker 7/);
    expect(await until(() => native.eventfdRead(errFd) === 1)).toBe(true);
    const stA = devA.stats().workers[0]!;
    expect(stA.state).toBe('broken');
    expect(stA.rings[0]).toMatchObject({ state: 'broken', brokenReason: 'module', errors: 1 });
    // The broken device's ring is no longer touched.
    a.post(3, 64);
    await new Promise((r) => setTimeout(r, 30));
    expect(a.reap()).toBe(0);

    // The other device is unaffected.
    b.post(50, 64);
    expect(await until(() => (b.reap(), b.returned === 50))).toBe(true);
    expect(errorsB).toEqual([]);
    expect(devB.stats().workers[0]!.state).toBe('running');

    // The broken device still obeys control: stop returns its indices and joins.
    const [ix] = await devA.stopRings([0]);
    expect(ix!.lastAvailIdx).toBe(3); // two completed + the chain that threw was popped
    // Its module state is unknown: a restarted ring is refused (broken again), not served.
    errorsA.length = 0;
    await devA.startRings([{ ...a.spec(), lastAvailIdx: 3 }]);
    expect(await until(() => errorsA.length > 0)).toBe(true);
    expect(errorsA[0]!.message).toMatch(/queue group is broken/);
    expect(a.reap()).toBe(0);
    await devA.stop();
  });

  it('a malformed ring (RingError) breaks that ring with its code; the other ring of the group keeps running', async () => {
    const guest = new FakeGuestMemory();
    const r0 = new FakeGuestRing(guest, 0);
    const r1 = new FakeGuestRing(guest, 1);
    onCleanup(() => (r0.close(), r1.close()));
    const dev = await startDevice(guest, [r0, r1], { queuesPerWorker: 2 });
    const errors: DataPlaneError[] = [];
    dev.onError((e) => errors.push(e));
    // The guest moves avail.idx far beyond the queue size.
    const reg = guest.mem.regions[0]!;
    Atomics.store(reg.u16, (r0.availGpa + 2 - reg.gpa) >> 1, 1000);
    r0.kick();
    expect(await until(() => errors.length > 0)).toBe(true);
    expect(errors[0]).toMatchObject({ ringIndex: 0, reason: 'ring', code: 'AVAIL_IDX' });
    const st = dev.stats().workers[0]!;
    expect(st.rings[0]).toMatchObject({ state: 'broken', brokenReason: 'ring' });
    expect(st.rings[1]!.state).toBe('running');
    r1.post(5, 64);
    expect(await until(() => (r1.reap(), r1.returned === 5))).toBe(true);
  });
});
