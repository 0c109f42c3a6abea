import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MAX_FDS,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  POLL_DISCONNECT,
  POLL_PRIORITIZED,
  POLL_READABLE,
  POLL_WRITABLE,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  Poller,
  addSeals,
  assertNoV8Sandbox,
  close,
  dup,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  fstatSize,
  ftruncate,
  getSeals,
  mmap,
  native,
  recvmsg,
  sendmsg,
  pollReadable,
  setNonBlocking,
  shutdown,
  unixAccept,
} from '../src/index.js';
import { BAD_FD, O_CLOEXEC, O_NONBLOCK, backTo, fdFlags, held, nativeError, type Held } from './util.js';

let baseline: Held;
beforeAll(() => {
  baseline = held();
});
afterAll(async () => {
  expect(await backTo(baseline)).toEqual(baseline);
});

describe('bad fds', () => {
  const buf = new Uint8Array(16);
  const calls: Array<[string, () => unknown, string]> = [
    ['close', () => close(BAD_FD), 'close'],
    ['dup', () => dup(BAD_FD), 'fcntl'],
    ['fstatSize', () => fstatSize(BAD_FD), 'fstat'],
    ['getSeals', () => getSeals(BAD_FD), 'fcntl'],
    ['addSeals', () => addSeals(BAD_FD, F_SEAL_SHRINK), 'fcntl'],
    ['ftruncate', () => ftruncate(BAD_FD, 0), 'ftruncate'],
    ['mmap', () => mmap(BAD_FD, 0, 4096), 'mmap'],
    ['eventfdRead', () => eventfdRead(BAD_FD), 'read'],
    ['eventfdWrite', () => eventfdWrite(BAD_FD, 1), 'write'],
    ['setNonBlocking', () => setNonBlocking(BAD_FD, true), 'fcntl'],
    ['sendmsg', () => sendmsg(BAD_FD, buf, 0, 1), 'sendmsg'],
    ['recvmsg', () => recvmsg(BAD_FD, buf, 0, 16), 'recvmsg'],
    ['unixAccept', () => unixAccept(BAD_FD), 'accept4'],
    ['shutdown', () => shutdown(BAD_FD), 'shutdown'],
    ['Poller', () => new Poller(BAD_FD, () => {}), 'uv_poll_init'],
  ];
  for (const [name, call, syscall] of calls) {
    it(`${name} throws EBADF with code, errno and syscall`, () => {
      const e = nativeError(call);
      expect(e).toBeInstanceOf(Error);
      expect(e).toMatchObject({ code: 'EBADF', errno: 9, syscall });
      expect(e.message).toBe(`${syscall}: EBADF (Bad file descriptor)`);
    });
  }
});

describe('eventfd', () => {
  it('adds writes, reads and resets the counter, 0 when empty', () => {
    const fd = eventfdCreate(3);
    expect(fdFlags(fd) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    expect(eventfdWrite(fd)).toBe(true);
    expect(eventfdWrite(fd, 4)).toBe(true);
    expect(eventfdRead(fd)).toBe(8);
    expect(eventfdRead(fd)).toBe(0);
    close(fd);
  });

  it('returns false when the counter is full and clamps reads above 2^53 - 1', () => {
    const fd = eventfdCreate();
    let writes = 0;
    while (eventfdWrite(fd, Number.MAX_SAFE_INTEGER)) {
      writes++;
      if (writes > 5000) break;
    }
    // 2048 * (2^53 - 1) <= 2^64 - 2 < 2049 * (2^53 - 1)
    expect(writes).toBe(2048);
    expect(eventfdRead(fd)).toBe(Number.MAX_SAFE_INTEGER);
    expect(eventfdRead(fd)).toBe(0);
    close(fd);
  });

  it('rejects bad arguments', () => {
    expect(() => eventfdCreate(-1)).toThrow(RangeError);
    expect(() => eventfdCreate(2 ** 32)).toThrow(RangeError);
    const fd = eventfdCreate();
    expect(() => eventfdWrite(fd, 1.5)).toThrow(RangeError);
    expect(() => eventfdWrite(fd, 2 ** 53)).toThrow(RangeError);
    expect(() => close('3' as unknown as number)).toThrow(TypeError);
    expect(eventfdRead(fd)).toBe(0);
    close(fd);
  });
});

describe('dup and O_NONBLOCK', () => {
  it('dup gives a new close-on-exec fd on the same file', () => {
    const fd = eventfdCreate();
    const copy = dup(fd);
    expect(copy).not.toBe(fd);
    expect(fdFlags(copy) & O_CLOEXEC).toBe(O_CLOEXEC);
    eventfdWrite(copy, 5);
    expect(eventfdRead(fd)).toBe(5);
    close(copy);
    close(fd);
  });

  it('setNonBlocking sets and clears O_NONBLOCK', () => {
    const fd = eventfdCreate();
    setNonBlocking(fd, false);
    expect(fdFlags(fd) & O_NONBLOCK).toBe(0);
    setNonBlocking(fd, true);
    expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
    expect(() => setNonBlocking(fd, 1 as unknown as boolean)).toThrow(TypeError);
    close(fd);
  });
});

describe('pollReadable', () => {
  it('times out with 0, reports a readable eventfd with POLLIN, and ignores negative fds', () => {
    const a = eventfdCreate(0);
    const b = eventfdCreate(0);
    const fds = new Int32Array(6);
    fds.set([a, -1, b]);
    const t0 = performance.now();
    expect(pollReadable(fds, 3, 30)).toBe(0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    expect([...fds.subarray(3)]).toEqual([0, 0, 0]);
    eventfdWrite(b, 1);
    expect(pollReadable(fds, 3, -1)).toBe(1);
    expect([...fds.subarray(3)]).toEqual([0, 0, POLLIN]);
    expect(fds[2]).toBe(b); // the fds themselves are left as they were
    close(a);
    close(b);
  });

  it('reports a closed fd as POLLNVAL instead of blocking', () => {
    const a = eventfdCreate(0);
    close(a);
    const fds = new Int32Array([a, 0]);
    expect(pollReadable(fds, 1, -1)).toBe(1);
    expect(fds[1]).toBe(POLLNVAL);
  });

  it('blocks the calling thread until another thread writes the eventfd', async () => {
    const e = eventfdCreate(0);
    const { Worker } = await import('node:worker_threads');
    const addon = fileURLToPath(new URL('../build/Release/vhost_native.node', import.meta.url));
    const w = new Worker(
      `const { workerData } = require('node:worker_threads');
       setTimeout(() => require(workerData.addon).eventfdWrite(workerData.fd, 1), 50);`,
      { eval: true, workerData: { addon, fd: e } },
    );
    const fds = new Int32Array([e, 0]);
    const t0 = performance.now();
    expect(pollReadable(fds, 1, 5000)).toBe(1);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(40);
    expect(fds[1]).toBe(POLLIN);
    await w.terminate();
    close(e);
  });

  it('refuses bad arguments with a clear error', () => {
    expect(() => pollReadable([3, 0] as unknown as Int32Array, 1, 0)).toThrow(/"fds" must be an Int32Array/);
    expect(() => pollReadable(new Int32Array(2), 65, 0)).toThrow(/"count"/);
    expect(() => pollReadable(new Int32Array(3), 2, 0)).toThrow(/2 \* count/);
    expect(() => pollReadable(new Int32Array(2), 1, -2)).toThrow(/"timeoutMs"/);
  });
});

describe('constants and loading', () => {
  it('match the values the addon was compiled with', () => {
    expect(native.constants).toEqual({
      F_SEAL_SEAL,
      F_SEAL_SHRINK,
      F_SEAL_GROW,
      F_SEAL_WRITE,
      F_SEAL_FUTURE_WRITE,
      MFD_CLOEXEC,
      MFD_ALLOW_SEALING,
      POLL_READABLE,
      POLL_WRITABLE,
      POLL_DISCONNECT,
      POLL_PRIORITIZED,
      MAX_FDS,
      POLLIN,
      POLLERR,
      POLLHUP,
      POLLNVAL,
    });
  });

  it('refuses a V8 build with the sandbox enabled, with a clear message', () => {
    expect(() => assertNoV8Sandbox({ v8_enable_sandbox: 1 })).toThrow(/V8 sandbox enabled/);
    expect(() => assertNoV8Sandbox({ v8_enable_sandbox: true })).toThrow(/SharedArrayBuffer/);
    expect(() => assertNoV8Sandbox({ v8_enable_sandbox: 0 })).not.toThrow();
    // This very Node passed the check at load time (or the import above would have thrown).
    expect((process.config.variables as unknown as Record<string, unknown>)['v8_enable_sandbox']).toBe(0);
  });
});
