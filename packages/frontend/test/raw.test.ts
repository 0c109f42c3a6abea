/**
 * RawVhostClient: crafted messages (any header, payload, fds), replies,
 * timeouts and the peer closing — what bad-input and fuzz tests rely on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { FrontendRequest as R, decodeU64 } from '@vhost-ts/vhost/protocol';
import { ConnectionClosedError, encodeRawMessage, RawVhostClient, ReplyTimeoutError, VhostConnection } from '@vhost-ts/frontend';
import { countResources } from '../../../test/support/leaks.js';
import { FakeBackend, FAKE_FEATURES } from './support/fake-backend.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

function pair(opts = {}): { backend: FakeBackend; raw: RawVhostClient } {
  const { backend, frontendFd } = FakeBackend.pair(opts);
  const raw = RawVhostClient.fromFd(frontendFd, { timeoutMs: 500 });
  cleanup.push(() => {
    raw.close();
    backend.close();
  });
  return { backend, raw };
}

describe('RawVhostClient', () => {
  it('encodes any header: request, flags, a lying size field, truncation', () => {
    const b = encodeRawMessage({ request: 0xdeadbeef, flags: 0xff, payload: Uint8Array.of(1, 2, 3), size: 1000 });
    const dv = new DataView(b.buffer, b.byteOffset);
    expect([dv.getUint32(0, true), dv.getUint32(4, true), dv.getUint32(8, true)]).toEqual([0xdeadbeef, 0xff, 1000]);
    expect([...b.subarray(12)]).toEqual([1, 2, 3]);
    expect(encodeRawMessage({ request: 1, truncateTo: 5 }).byteLength).toBe(5);
    expect(() => encodeRawMessage({ request: 1, truncateTo: 13 })).toThrow(RangeError);
    expect(new DataView(encodeRawMessage({ request: 1 }).buffer).getUint32(4, true)).toBe(1);
  });

  it('request() returns the reply with its header fields', async () => {
    const { raw } = pair();
    const reply = await raw.request({ request: R.GET_FEATURES });
    expect(reply).toMatchObject({ request: R.GET_FEATURES, flags: 0x5, size: 8, fds: [] });
    expect(decodeU64(reply.payload)).toBe(FAKE_FEATURES);
  });

  it('sends fds with a message; the back-end receives them', async () => {
    const { backend, raw } = pair();
    const efd = native.eventfdCreate(0);
    cleanup.push(() => native.close(efd));
    await raw.send({ request: R.SET_VRING_CALL, payload: new Uint8Array(8), fds: [efd] });
    await raw.request({ request: R.GET_FEATURES });
    expect(backend.log.map((m) => [m.request, m.fds])).toEqual([[R.SET_VRING_CALL, 1], [R.GET_FEATURES, 0]]);
  });

  it('readReply times out when nothing comes (ReplyTimeoutError), the connection stays usable', async () => {
    const { raw } = pair();
    await raw.send({ request: R.SET_OWNER });
    await expect(raw.readReply(50)).rejects.toBeInstanceOf(ReplyTimeoutError);
    expect(await raw.isAlive(500)).toBe(true);
  });

  it('observes the back-end closing: closed resolves { by: peer }, waitClosed and pending reads settle', async () => {
    const { backend, raw } = pair();
    const pending = raw.readReply(2000);
    backend.conn.close();
    await expect(pending).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(await raw.waitClosed(1000)).toEqual({ by: 'peer' });
    expect(raw.isClosed).toBe(true);
    await expect(raw.send({ request: R.GET_FEATURES })).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(await raw.isAlive(100)).toBe(false);
  });

  it('waitClosed returns null while the back-end keeps the connection', async () => {
    const { raw } = pair();
    expect(await raw.waitClosed(30)).toBe(null);
  });

  it('a truncated message reaches the peer as a partial one (it sees the close mid-message)', async () => {
    const [a, b] = native.socketpair();
    const raw = RawVhostClient.fromFd(a);
    const peer = new VhostConnection(b);
    cleanup.push(() => {
      raw.close();
      peer.close();
    });
    await raw.send({ request: R.GET_FEATURES, truncateTo: 7 });
    raw.close();
    const info = await peer.closed;
    expect(info.by).toBe('peer');
    expect(info.error?.message).toMatch(/middle of a message/);
  });

  it('fds received in a reply belong to the caller; close() frees everything', async () => {
    const before = countResources().fds;
    const [a, b] = native.socketpair();
    const raw = RawVhostClient.fromFd(a);
    const efd = native.eventfdCreate(0);
    // The "back-end" side answers with an fd attached.
    const msg = encodeRawMessage({ request: R.GET_INFLIGHT_FD, flags: 0x5, payload: new Uint8Array(24) });
    native.sendmsg(b, msg, 0, msg.byteLength, [efd]);
    native.close(efd);
    const reply = await raw.readReply(1000);
    expect(reply.fds).toHaveLength(1);
    RawVhostClient.closeFds(reply.fds);
    raw.close();
    native.close(b);
    expect(countResources().fds).toBe(before);
  });

  it('a reply announcing a payload above the limit closes the connection (no huge allocation)', async () => {
    const [a, b] = native.socketpair();
    const raw = RawVhostClient.fromFd(a, { maxPayload: 1024 });
    cleanup.push(() => {
      raw.close();
      native.close(b);
    });
    const msg = encodeRawMessage({ request: R.GET_FEATURES, flags: 0x5, size: 1 << 30 });
    native.sendmsg(b, msg, 0, msg.byteLength);
    await expect(raw.readReply(1000)).rejects.toBeInstanceOf(ConnectionClosedError);
    expect((await raw.closed).by).toBe('error');
  });
});
