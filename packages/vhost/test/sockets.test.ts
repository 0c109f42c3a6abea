import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { FrontendRequest, bit } from '@vhost-ts/vhost/protocol';
import { VhostUserDriver } from '@vhost-ts/vhost';
import { ScriptedFrontend, TestMemory, sleep } from './support/frontend.js';
import { RecordingLogger, expectBackToBaseline, settledBaseline, startHarness } from './support/harness.js';
import { TEST_FEATURES, barrier, closeRingFds, configureRing, negotiate, sendMemTable, type RingFds } from './support/scenario.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-sock-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Accepts one connection on a listening fd (polling), or throws after the timeout. */
async function accept(listenFd: number, timeoutMs = 3000): Promise<ScriptedFrontend> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const fd = native.unixAccept(listenFd);
    if (fd >= 0) return new ScriptedFrontend(fd);
    if (Date.now() > end) throw new Error('no connection from the back-end');
    await sleep(5);
  }
}

describe('server mode', () => {
  it('serves two front-ends at once, one device each; one leaving does not disturb the other', async () => {
    const h = await startHarness({ features: TEST_FEATURES, protocolFeatures: 0n });
    const mem = new TestMemory(1 << 20);
    const rings: RingFds[] = [];
    const a = ScriptedFrontend.connect(h.socketPath);
    const b = ScriptedFrontend.connect(h.socketPath);
    try {
      await h.waitEvent('newConnection', 2);
      await negotiate(a, { protocol: 0n, features: bit(32) });
      await negotiate(b, { protocol: 0n, features: bit(32) });
      await sendMemTable(a, mem); // no REPLY_ACK negotiated: NEED_REPLY is still honoured
      await sendMemTable(b, mem);
      rings.push(await configureRing(a, 0), await configureRing(b, 0));
      expect(h.count('newDevice')).toBe(2);
      const ids = h.events.filter((e) => e.name === 'newDevice').map((e) => e.deviceId);
      expect(new Set(ids).size).toBe(2);
      expect(h.driver.devices.length).toBe(2);
      a.close();
      await h.waitEvent('destroyConnection');
      expect(h.events.filter((e) => e.name === 'destroyDevice').map((e) => e.deviceId)).toEqual([ids[0]]);
      expect(await b.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
      expect(h.driver.devices.length).toBe(1);
    } finally {
      a.close();
      b.close();
      await h.stop();
      closeRingFds(rings);
      mem.release();
    }
  });

  it('runs several drivers in one process, each with its own features', async () => {
    const h1 = await startHarness({ features: TEST_FEATURES });
    const h2 = await startHarness({ features: TEST_FEATURES | bit(28) });
    const a = ScriptedFrontend.connect(h1.socketPath);
    const b = ScriptedFrontend.connect(h2.socketPath);
    try {
      expect(await a.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
      expect(await b.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES | bit(28));
    } finally {
      a.close();
      b.close();
      await h1.stop();
      await h2.stop();
    }
  });

  it('removes a stale socket file, refuses a live one and a non-socket', async () => {
    const sock = path.join(dir, 'stale.sock');
    const stale = native.unixListen(sock);
    native.close(stale); // the file stays, nobody listens
    const logger = new RecordingLogger();
    const d1 = new VhostUserDriver({ path: sock, maxQueues: 2, logger });
    await d1.start();
    expect(logger.has(/removing stale socket/)).toBe(true);
    const d2 = new VhostUserDriver({ path: sock, maxQueues: 2, logger });
    await expect(d2.start()).rejects.toThrow(/in use/);
    await d1.stop();
    expect(existsSync(sock)).toBe(false); // we created it, we removed it
    const file = path.join(dir, 'plain');
    writeFileSync(file, 'x');
    await expect(new VhostUserDriver({ path: file, maxQueues: 2, logger }).start()).rejects.toThrow(/not a socket/);
  });

  it('accepts on an inherited listening fd (--fd=N)', async () => {
    const sock = path.join(dir, 'inherited.sock');
    const listenFd = native.unixListen(sock);
    const h = await startHarness({ fd: listenFd, features: TEST_FEATURES });
    const fe = ScriptedFrontend.connect(sock);
    try {
      expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
      expect(h.driver.path).toBe(`fd:${listenFd}`);
    } finally {
      fe.close();
      await h.stop();
    }
  });

  it('stop() destroys running devices, closes connections and releases everything', async () => {
    const mem = new TestMemory(1 << 20);
    const base = await settledBaseline();
    const h = await startHarness({ features: TEST_FEATURES });
    const fe = ScriptedFrontend.connect(h.socketPath);
    const rings: RingFds[] = [];
    try {
      await negotiate(fe, { protocol: 0n, features: bit(32) });
      await sendMemTable(fe, mem);
      rings.push(await configureRing(fe, 0));
      expect(h.count('newDevice')).toBe(1);
      await h.stop();
      expect(h.events.map((e) => e.name).slice(-2)).toEqual(['destroyDevice', 'destroyConnection']);
      expect(await fe.waitClosed()).toBe(true);
      expect(existsSync(h.socketPath)).toBe(false);
    } finally {
      fe.close();
      closeRingFds(rings);
    }
    await expectBackToBaseline(base);
    mem.release();
  });
});

describe('client mode', () => {
  it('fails to start without reconnect when nobody listens', async () => {
    const d = new VhostUserDriver({ path: path.join(dir, 'none.sock'), client: true, maxQueues: 2, logger: new RecordingLogger() });
    await expect(d.start()).rejects.toThrow(/cannot connect/);
  });

  it('retries until the front-end is there and reconnects after it restarts', async () => {
    const sock = path.join(dir, 'frontend.sock');
    const h = await startHarness({ path: sock, client: true, reconnect: true, features: TEST_FEATURES });
    try {
      await sleep(150); // the back-end is retrying
      expect(h.count('newConnection')).toBe(0);
      let listenFd = native.unixListen(sock);
      let fe = await accept(listenFd);
      await h.waitEvent('newConnection');
      expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);

      // The front-end process goes away: connection and listening socket disappear.
      fe.close();
      native.close(listenFd);
      rmSync(sock);
      await h.waitEvent('destroyConnection');
      await sleep(120);
      // It comes back on the same path.
      listenFd = native.unixListen(sock);
      fe = await accept(listenFd);
      await h.waitEvent('newConnection', 2);
      expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
      await barrier(fe);
      fe.close();
      native.close(listenFd);
    } finally {
      await h.stop();
    }
  });
});
