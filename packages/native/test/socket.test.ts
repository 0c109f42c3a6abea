import { spawn } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  POLL_READABLE,
  Poller,
  close,
  eventfdCreate,
  eventfdRead,
  fstatSize,
  memfdCreate,
  ftruncate,
  mmap,
  recvmsg,
  recvmsgCapped,
  release,
  sendmsg,
  shutdown,
  socketpair,
  unixAccept,
  unixConnect,
  unixListen,
  type RecvResult,
} from '../src/index.js';
import { O_CLOEXEC, O_NONBLOCK, backTo, fdFlags, fixture, held, nativeError, within, type Held } from './util.js';

let baseline: Held;
let dir: string;
beforeAll(() => {
  baseline = held();
  dir = mkdtempSync(path.join(tmpdir(), 'vhost-native-'));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  expect(await backTo(baseline)).toEqual(baseline);
});

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** The first `n` bytes of the file behind `fd` as text, through a mapping released afterwards. */
function mappedText(fd: number, size: number, n: number): string {
  const sab = mmap(fd, 0, size);
  const s = text(new Uint8Array(sab, 0, n).slice());
  release(sab);
  return s;
}

/**
 * Reads whole messages (12-byte header, then exactly `size` payload bytes) as
 * they arrive on a non-blocking socket, recording which fds came with which
 * message. Never asks for more bytes than the current message has left, so the
 * fds of message N+1 cannot be taken while reading message N.
 */
function readMessages(fd: number, count: number): Promise<Array<{ request: number; payload: number[]; fds: number[] }>> {
  return new Promise((resolve, reject) => {
    const out: Array<{ request: number; payload: number[]; fds: number[] }> = [];
    const buf = new Uint8Array(256);
    let want = 12;
    let got = 0;
    let header = true;
    let fds: number[] = [];
    let request = 0;
    const poller = new Poller(fd, (events) => {
      try {
        if (events < 0) throw new Error(`poll error ${events}`);
        for (;;) {
          const r: RecvResult = recvmsg(fd, buf, got, want - got);
          if (r.bytes === -1) return;
          if (r.bytes === 0) throw new Error('peer closed early');
          got += r.bytes;
          fds.push(...r.fds);
          if (got < want) continue;
          const view = new DataView(buf.buffer, buf.byteOffset);
          if (header) {
            request = view.getUint32(0, true);
            const size = view.getUint32(8, true);
            header = false;
            want = 12 + size;
            if (size > 0) continue;
          }
          out.push({ request, payload: Array.from(buf.subarray(12, want)), fds });
          fds = [];
          header = true;
          want = 12;
          got = 0;
          if (out.length === count) {
            poller.close();
            resolve(out);
            return;
          }
        }
      } catch (e) {
        poller.close();
        reject(e as Error);
      }
    });
    poller.start(POLL_READABLE);
  });
}

describe('fd passing between processes', () => {
  it('a child sends 2 memfds + 1 eventfd; they arrive with their message only, and nothing leaks', async () => {
    const before = held();
    const [mine, theirs] = socketpair();
    const child = spawn(process.execPath, [fixture('send-fds-child.mjs')], {
      stdio: ['ignore', 'inherit', 'inherit', theirs],
    });
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('exit', resolve);
      child.once('error', reject);
    });
    close(theirs);
    const messages = await within(readMessages(mine, 3), 10_000, 'messages from the child');
    expect(await within(exited, 10_000, 'child exit')).toBe(0);

    expect(messages.map((m) => [m.request, m.payload, m.fds.length])).toEqual([
      [1, [1, 2, 3, 4, 5, 6, 7, 8], 3],
      [2, [9, 10, 11, 12], 0],
      [3, [13, 14], 1],
    ]);
    const [a, b, e1] = messages[0]?.fds ?? [];
    const [e2] = messages[2]?.fds ?? [];
    if (a === undefined || b === undefined || e1 === undefined || e2 === undefined) throw new Error('fds missing');
    // The kernel gave us the very objects the child sent, in its order.
    expect(readlinkSync(`/proc/self/fd/${a}`)).toBe('/memfd:vhost-a (deleted)');
    expect(readlinkSync(`/proc/self/fd/${b}`)).toBe('/memfd:vhost-b (deleted)');
    expect(readlinkSync(`/proc/self/fd/${e1}`)).toBe('anon_inode:[eventfd]');
    expect(readlinkSync(`/proc/self/fd/${e2}`)).toBe('anon_inode:[eventfd]');
    for (const fd of [a, b, e1, e2]) expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    expect(fstatSize(a)).toBe(8192);
    expect(fstatSize(b)).toBe(4096);
    expect(mappedText(a, 8192, 5)).toBe('alpha');
    expect(mappedText(b, 4096, 4)).toBe('beta');
    expect(eventfdRead(e1)).toBe(7);
    expect(eventfdRead(e2)).toBe(9);
    for (const fd of [a, b, e1, e2, mine]) close(fd);
    expect(await backTo(before)).toEqual(before);
  });
});

describe('unix stream sockets', () => {
  it('listen, accept, connect, send, receive, EAGAIN and EOF', () => {
    const where = path.join(dir, 'listen.sock');
    const listener = unixListen(where);
    expect(fdFlags(listener) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    expect(unixAccept(listener)).toBe(-1);
    const client = unixConnect(where);
    expect(fdFlags(client) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    const server = unixAccept(listener);
    expect(server).toBeGreaterThanOrEqual(0);
    expect(fdFlags(server) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);

    const hello = new TextEncoder().encode('xxhello');
    expect(sendmsg(client, hello, 2, 5)).toBe(5);
    const buf = new Uint8Array(32);
    expect(recvmsg(server, buf, 4, 16)).toEqual({ bytes: 5, fds: [] });
    expect(text(buf.subarray(4, 9))).toBe('hello');
    expect(recvmsg(server, buf, 0, 16)).toEqual({ bytes: -1, fds: [] });
    shutdown(client);
    expect(recvmsg(server, buf, 0, 16)).toEqual({ bytes: 0, fds: [] });

    expect(nativeError(() => unixListen(where))).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    expect(nativeError(() => unixConnect(path.join(dir, 'missing.sock')))).toMatchObject({
      code: 'ENOENT',
      syscall: 'connect',
    });
    expect(() => unixListen('x'.repeat(200))).toThrow(RangeError);
    expect(() => unixListen('')).toThrow(RangeError);
    for (const fd of [server, client, listener]) close(fd);
  });

  it('receives straight into mapped memory through a view at an offset', () => {
    const [a, b] = socketpair();
    const mem = memfdCreate('vhost-recv');
    ftruncate(mem, 4096);
    const sab = mmap(mem, 0, 4096);
    const view = new Uint8Array(sab, 100, 50);
    sendmsg(a, new Uint8Array([1, 2, 3, 4]), 0, 4);
    expect(recvmsg(b, view, 10, 4)).toEqual({ bytes: 4, fds: [] });
    expect(Array.from(new Uint8Array(sab, 110, 4))).toEqual([1, 2, 3, 4]);
    release(sab);
    for (const fd of [a, b, mem]) close(fd);
  });

  it('sendmsg returns -1 when the socket is full', () => {
    const [a, b] = socketpair();
    const chunk = new Uint8Array(65536);
    let sent = 0;
    let result = 0;
    for (let i = 0; i < 1000 && result !== -1; i++) {
      result = sendmsg(a, chunk, 0, chunk.length);
      if (result > 0) sent += result;
    }
    expect(result).toBe(-1);
    let received = 0;
    for (;;) {
      const r = recvmsg(b, chunk, 0, chunk.length);
      if (r.bytes <= 0) break;
      received += r.bytes;
    }
    expect(received).toBe(sent);
    close(a);
    close(b);
  });

  it('checks sendmsg/recvmsg arguments', () => {
    const [a, b] = socketpair();
    const buf = new Uint8Array(8);
    const efds = Array.from({ length: 9 }, () => eventfdCreate());
    expect(() => sendmsg(a, buf, 0, 1, efds)).toThrow(RangeError);
    expect(() => sendmsg(a, buf, 0, 0, efds.slice(0, 1))).toThrow(RangeError);
    expect(() => sendmsg(a, buf, 4, 5)).toThrow(RangeError);
    expect(() => sendmsg(a, buf, 0, 1, [-1])).toThrow(RangeError);
    expect(() => sendmsg(a, [1, 2] as unknown as Uint8Array, 0, 1)).toThrow(TypeError);
    expect(() => recvmsg(b, buf, 0, 0)).toThrow(RangeError);
    expect(() => recvmsg(b, buf, 8, 1)).toThrow(RangeError);
    // A getter on the fd list that detaches the data buffer: the buffer is
    // checked after the list is read, so this is a RangeError, not a stale pointer.
    const doomed = new Uint8Array(new ArrayBuffer(8));
    const sneaky = [0];
    Object.defineProperty(sneaky, 0, {
      get: () => {
        structuredClone(doomed.buffer, { transfer: [doomed.buffer] });
        return efds[0];
      },
    });
    expect(() => sendmsg(a, doomed, 0, 4, sneaky)).toThrow(RangeError);
    expect(() => unixListen('bad\0path')).toThrow(RangeError);
    // Nothing was sent by the failed calls.
    expect(recvmsg(b, buf, 0, 8)).toEqual({ bytes: -1, fds: [] });
    for (const fd of [a, b, ...efds]) close(fd);
  });
});

describe('MSG_CTRUNC', () => {
  for (const [sent, room] of [
    [3, 1], // room for 1 fd rounds up to 2 on 64-bit: 2 arrive, 1 is dropped by the kernel
    [1, 0],
  ] as const) {
    it(`throws ECTRUNC and closes what arrived (${sent} fds sent, room for ${room})`, () => {
      const before = held();
      const [a, b] = socketpair();
      const efds = Array.from({ length: sent }, () => eventfdCreate());
      expect(sendmsg(a, new Uint8Array([42]), 0, 1, efds)).toBe(1);
      const e = nativeError(() => recvmsgCapped(b, new Uint8Array(4), 0, 4, room));
      expect(e).toMatchObject({ code: 'ECTRUNC', syscall: 'recvmsg', errno: 90, bytes: 1 });
      expect(e.message).toMatch(/^recvmsg: ECTRUNC \(/);
      for (const fd of [a, b, ...efds]) close(fd);
      // Every received fd was closed by recvmsg: we are back where we started.
      expect(held()).toEqual(before);
    });
  }

  it('recvmsgCapped with enough room behaves like recvmsg', () => {
    const [a, b] = socketpair();
    const efd = eventfdCreate(4);
    sendmsg(a, new Uint8Array([1]), 0, 1, [efd]);
    const r = recvmsgCapped(b, new Uint8Array(1), 0, 1, 1);
    expect(r.bytes).toBe(1);
    expect(r.fds).toHaveLength(1);
    expect(eventfdRead(r.fds[0] ?? -1)).toBe(4);
    for (const fd of [a, b, efd, ...r.fds]) close(fd);
  });
});
