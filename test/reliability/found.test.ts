/**
 * Defects the fuzzers found, each reduced to its trigger and kept as a
 * regression test. A test marked `it.fails` documents a defect that is
 * reported and not fixed yet (it starts failing, i.e. passing for real, once
 * the fix lands: then drop the marker).
 */
import { openSync, closeSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { BackendRefusedError, FrontendMemory, VhostUserClient } from '@vhost-ts/frontend';
import { ensureBuilt } from './lib/build.js';
import { BackendProcess } from './lib/backend-process.js';
import { FUZZ_DRIVER_FEATURES, FUZZ_MAX_QUEUES, FuzzLane, runConnection } from './lib/control-fuzz.js';
import { HostileGuest } from './lib/hostile-guest.js';

/** Negotiates, maps memory and configures two rings whose kick fds are `kicks`; enables them (newDevice). */
async function startWithKicks(sock: string, kicks: [number, number]): Promise<{ client: VhostUserClient; mem: FrontendMemory; fds: number[] }> {
  const client = await VhostUserClient.connect(sock, { timeoutMs: 5000 });
  await client.setOwner();
  await client.getFeatures();
  await client.setProtocolFeatures((await client.getProtocolFeatures()) & 0x9n); // MQ, REPLY_ACK
  await client.setFeatures((1n << 32n) | (1n << 30n));
  const mem = FrontendMemory.create({ kind: 'multi', size: 2 << 20, regions: 1 });
  await client.setMemTable(mem.memoryTable(), mem.memoryTableFds());
  const ring = mem.allocator.alloc(0x8000, 4096).gpa;
  const fds: number[] = [];
  for (const i of [0, 1]) {
    const b = ring + i * 0x4000;
    const call = native.eventfdCreate(0);
    fds.push(call);
    await client.setVringCall(i, call);
    await client.setVringNum(i, 64);
    await client.setVringBase(i, 0);
    await client.setVringAddr({ index: i, flags: 0, desc: BigInt(mem.gpaToVa(b)), avail: BigInt(mem.gpaToVa(b + 0x1000)), used: BigInt(mem.gpaToVa(b + 0x2000)), log: 0n });
    // The control plane refuses a kick fd that is not an eventfd (the workers' start would fail too).
    await client.setVringKick(i, kicks[i]!).catch((e: unknown) => {
      if (!(e instanceof BackendRefusedError)) throw e;
    });
  }
  for (const i of [0, 1]) await client.setVringEnable(i, true);
  await client.getFeatures();
  return { client, mem, fds };
}

beforeAll(() => ensureBuilt(), 200_000);

describe('defects found by the fuzzers', () => {
  /**
   * Found by the long control-plane run (seed 20261125, connection 3593: SET_VRING_KICK of
   * vring 1 carried /dev/null). DeviceWorkers.start() (workers/src/manager.ts, the loop
   * after the workers are ready) creates a kick Poller per started ring; `new Poller(fd)`
   * throws EPERM for an fd epoll cannot watch (/dev/null, a regular file, a memfd). The
   * exception leaves the DeviceWorkers registered in the manager with its worker threads
   * running and the Pollers already created (vring 0's) started; attachDataPlane's
   * newDevice fails, so nobody ever stops them, and the session retries newDevice after
   * every later message, leaking one more device each time. When the connection's teardown
   * closes the kick eventfd a leaked Poller still has registered, libuv's next
   * epoll_ctl(ADD) fails with EBADF and uv__epoll_ctl_prep abort()s the whole process.
   */
  it('the fuzz connection seed 20261125 #3593 (kick fd = /dev/null): the process survives', async () => {
    const be = await BackendProcess.start({
      drivers: [{ name: 'fuzz', module: 'loopback', queuesPerWorker: 2, maxQueues: FUZZ_MAX_QUEUES, features: FUZZ_DRIVER_FEATURES, config: true, inflight: true, ackTimeoutMs: 2000, callbackTimeoutMs: 5000 }],
    });
    const lane = new FuzzLane(0);
    try {
      await runConnection(be.sockets.fuzz!, lane, 20261125, 3593, 8000);
      await new Promise((r) => setTimeout(r, 1500));
      expect(be.alive, `the back-end died: ${JSON.stringify(be.exitInfo)}`).toBe(true);
      // (When the abort's timing does not line up, the leak that causes it is still there.)
      expect(await be.workerDevices(), 'data-plane devices left running after the connection closed').toBe(0);
    } finally {
      lane.close();
      await be.stop();
    }
  });

  it('a kick fd epoll cannot watch (/dev/null, a memfd) at device start: the device fails without leaking worker threads or devices', async () => {
    const be = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    const nul = openSync('/dev/null', 'r');
    const kick0 = native.eventfdCreate(0);
    const memKick = native.memfdCreate('not-pollable');
    try {
      const g0 = await HostileGuest.open(be.sockets.dev!);
      await g0.close();
      const base = await be.snapshot();
      for (const bad of [nul, memKick]) {
        const { client, mem, fds } = await startWithKicks(be.sockets.dev!, [kick0, bad]);
        client.close();
        mem.close();
        for (const fd of fds) native.close(fd);
        await new Promise((r) => setTimeout(r, 1000));
        expect(be.alive, `the back-end died (${JSON.stringify(be.exitInfo)}) after a connection whose kick fd was not pollable`).toBe(true);
      }
      expect(await be.workerDevices(), 'data-plane devices left running after their connections closed').toBe(0);
      expect((await be.snapshot()).threads, 'worker threads left running').toBeLessThanOrEqual(base.threads);
    } finally {
      closeSync(nul);
      native.close(kick0);
      native.close(memKick);
      await be.stop();
    }
  });

  it('a kick fd epoll cannot watch, sent to a running device: refused or the connection closed, the process survives', async () => {
    const be = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    const nul = openSync('/dev/null', 'r');
    const k = [native.eventfdCreate(0), native.eventfdCreate(0)] as [number, number];
    try {
      const { client, mem, fds } = await startWithKicks(be.sockets.dev!, k);
      try {
        await client.setVringKick(1, nul).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        client.close();
        mem.close();
        for (const fd of fds) native.close(fd);
      }
      await new Promise((r) => setTimeout(r, 1000));
      expect(be.alive, `the back-end died (${JSON.stringify(be.exitInfo)})`).toBe(true);
      const g = await HostileGuest.open(be.sockets.dev!);
      await g.close();
      const end = Date.now() + 5000;
      while ((await be.workerDevices()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(await be.workerDevices()).toBe(0);
    } finally {
      closeSync(nul);
      for (const fd of k) native.close(fd);
      await be.stop();
    }
  });

  /**
   * Found by the long control-plane run (seed 20261126, connection #264's shape): a vring's
   * base is set while the rings are split (SET_VRING_BASE 0x8000 — a legal split index),
   * then SET_FEATURES turns RING_PACKED on (setFeatures only flips `v.packed`), and
   * GET_VRING_BASE encodes the split indices as a packed base: encodePackedBase throws a
   * RangeError ("packed index must be < 32768") out of the handler, which the session logs
   * as an internal error (packages/vhost/src/device/handlers/vring.ts getVringBase). The
   * connection is closed; nothing else is harmed, but a front-end's input reaches an
   * unexpected exception instead of a refusal.
   */
  it('GET_VRING_BASE after SET_FEATURES switched a ring holding a split base >= 0x8000 to packed: answered or refused, no internal error', async () => {
    const be = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32, 34] }] });
    try {
      const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
      try {
        await client.setOwner();
        await client.getFeatures();
        await client.setProtocolFeatures((await client.getProtocolFeatures()) & 0x9n); // MQ, REPLY_ACK
        await client.setFeatures((1n << 32n) | (1n << 30n));
        await client.setVringNum(0, 64);
        await client.setVringBase(0, 0x8000);
        await client.setFeatures((1n << 32n) | (1n << 30n) | (1n << 34n));
        await client.getVringBase(0).catch(() => undefined);
      } finally {
        client.close();
      }
      await new Promise((r) => setTimeout(r, 200));
      const logs = await be.logs();
      expect(logs.internal, logs.internalLines.join('\n\n')).toBe(0);
    } finally {
      await be.stop();
    }
  });

  /**
   * Found by the long control-plane run (seed 20261127, connection 28647): ADD_MEM_REG (or
   * SET_MEM_TABLE) with an odd mmap_offset is accepted by the control plane (mapFdArea maps
   * the page-aligned offset and keeps the delta as the view's sabOffset), but the queue
   * workers' guest memory needs even offsets (16-bit ring words): the data-plane update
   * fails ("guest region: sabOffset 1 must be even"), the device is put in NEEDS_RESET for a
   * region the back-end had acknowledged, and when it happens in memoryChanged the error
   * escapes the handler as an internal error ("ADD_MEM_REG: internal error: Error: ...
   * update #1 failed in the worker").
   */
  it('ADD_MEM_REG of a region with an odd mmap_offset on a running device: refused up front, or accepted with the device still working; no internal error', async () => {
    const be = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    try {
      const g = await HostileGuest.open(be.sockets.dev!, { protocolFeatures: 0x1_8009n }); // MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS, STATUS
      let refused = false;
      try {
        try {
          await g.fe.client.addMemReg({ guestPhysAddr: 0x100_0000n, memorySize: 0x4_0000n, userspaceAddr: 0x7f12_8000_0000n, mmapOffset: 1n }, g.fe.memory.fds[0]!);
        } catch (err) {
          if (!(err instanceof BackendRefusedError)) throw err;
          refused = true;
        }
        if (!refused) {
          // Accepted: the device must still serve its rings.
          const rx = g.alloc(2048);
          g.fe.vrings[0]!.ring.add([rx], [2048], 0, 1, 0);
          const tx = g.alloc(64);
          g.fe.vrings[1]!.ring.add([tx], [64], 1, 0, 0);
          g.fe.vrings[0]!.ring.publish();
          g.fe.vrings[1]!.ring.publish();
          g.kick(0);
          g.kick(1);
          const end = Date.now() + 3000;
          while (g.usedIdx(1) < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
          expect((await g.status()) & 0x40, 'the device went to NEEDS_RESET after an acknowledged ADD_MEM_REG').toBe(0);
          expect(g.usedIdx(1)).toBe(1);
        }
      } finally {
        await g.close();
      }
      const logs = await be.logs();
      expect(logs.internal, logs.internalLines.join('\n\n')).toBe(0);
    } finally {
      await be.stop();
    }
  });
});
