/**
 * Framing over a socketpair: exact header/payload reads with their fds,
 * in-order delivery while a handler is pending, buffered writes under
 * back-pressure, and fds released on close.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { FrontendRequest, HEADER_SIZE, REPLY_FLAGS, decodeU64, encodeHeader, encodeMessage, encodeU64, requestFlags } from '@vhost-ts/vhost/protocol';
import { MessageChannel, type ReceivedMessage } from '@vhost-ts/vhost/transport/channel';
import { silentLogger } from '@vhost-ts/vhost';
import { ScriptedFrontend, sleep } from './support/frontend.js';
import { countResources } from '../../../test/support/leaks.js';

const open: Array<{ close(): void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

function pair(
  onMessage: (m: ReceivedMessage) => void | Promise<void>,
  reasons: string[] = [],
  extra: Partial<ConstructorParameters<typeof MessageChannel>[0]> = {},
): { channel: MessageChannel; peer: ScriptedFrontend } {
  const [a, b] = native.socketpair();
  const channel = new MessageChannel({ fd: a, native, logger: silentLogger, peerSendsReplies: false, onMessage, onClose: (r) => reasons.push(r), ...extra });
  channel.start();
  const peer = new ScriptedFrontend(b);
  open.push({ close: () => channel.close('test done') }, peer);
  return { channel, peer };
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(2);
  }
}

describe('MessageChannel', () => {
  it('reassembles a message whose header and payload arrive in pieces, with its fds', async () => {
    const got: ReceivedMessage[] = [];
    const { peer } = pair((m) => {
      got.push(m);
    });
    const msg = encodeMessage(FrontendRequest.SET_VRING_CALL, requestFlags(), encodeU64(3n));
    const efd = native.eventfdCreate(0);
    peer.sendRaw(msg.subarray(0, 5), [efd]);
    await sleep(10);
    peer.sendRaw(msg.subarray(5, 14));
    await sleep(10);
    expect(got.length).toBe(0);
    peer.sendRaw(msg.subarray(14));
    await until(() => got.length === 1);
    expect(got[0]!.header).toEqual({ request: FrontendRequest.SET_VRING_CALL, flags: 1, size: 8 });
    expect(decodeU64(got[0]!.payload)).toBe(3n);
    expect(got[0]!.fds.length).toBe(1);
    native.eventfdWrite(got[0]!.fds[0]!, 5);
    expect(native.eventfdRead(efd)).toBe(5); // the same eventfd
    native.close(got[0]!.fds[0]!);
    native.close(efd);
  });

  it('never gives message N the fds of message N+1', async () => {
    const got: ReceivedMessage[] = [];
    const { peer } = pair((m) => {
      got.push(m);
    });
    const e1 = native.eventfdCreate(0);
    const e2 = native.eventfdCreate(0);
    peer.send(FrontendRequest.SET_VRING_KICK, encodeU64(0n), { fds: [e1] });
    peer.send(FrontendRequest.SET_FEATURES, encodeU64(1n));
    peer.send(FrontendRequest.SET_VRING_CALL, encodeU64(0n), { fds: [e2] });
    await until(() => got.length === 3);
    expect(got.map((m) => m.fds.length)).toEqual([1, 0, 1]);
    native.eventfdWrite(got[2]!.fds[0]!, 7);
    expect(native.eventfdRead(e2)).toBe(7);
    for (const m of got) for (const fd of m.fds) native.close(fd);
    native.close(e1);
    native.close(e2);
  });

  it('does not read the next message while a handler is pending', async () => {
    const order: string[] = [];
    let release: () => void = () => undefined;
    const { peer } = pair((m) => {
      order.push(`start ${m.header.request}`);
      if (m.header.request === FrontendRequest.SET_OWNER) {
        return new Promise<void>((r) => {
          release = () => {
            order.push('end 3');
            r();
          };
        });
      }
      order.push(`end ${m.header.request}`);
      return undefined;
    });
    peer.send(FrontendRequest.SET_OWNER);
    peer.send(FrontendRequest.GET_FEATURES);
    await sleep(30);
    expect(order).toEqual(['start 3']);
    release();
    await until(() => order.length === 4);
    expect(order).toEqual(['start 3', 'end 3', 'start 1', 'end 1']);
  });

  it('queues replies the peer does not read yet (EAGAIN) and delivers all of them in order', async () => {
    const { channel, peer } = pair(() => undefined);
    const N = 5_000; // one skb each (~1 KiB of socket buffer accounting): far more than the buffer holds
    for (let i = 0; i < N; i++) channel.send(encodeMessage(FrontendRequest.GET_FEATURES, REPLY_FLAGS, encodeU64(BigInt(i))));
    for (let i = 0; i < N; i++) {
      const r = await peer.recv();
      if (decodeU64(r.payload) !== BigInt(i)) throw new Error(`reply ${i} out of order`);
    }
    expect(channel.closed).toBe(false);
  });

  it('closes on MSG_CTRUNC (more fds than the control buffer holds) and leaks none of them', async () => {
    const before = countResources().fds;
    const [a, b] = native.socketpair();
    const reasons: string[] = [];
    // A receive side whose control buffer holds a single fd.
    const capped = { ...native, recvmsg: (fd: number, buf: Uint8Array, off: number, len: number) => native.recvmsgCapped(fd, buf, off, len, 1) };
    const channel = new MessageChannel({ fd: a, native: capped, logger: silentLogger, peerSendsReplies: false, onMessage: () => undefined, onClose: (r) => reasons.push(r) });
    channel.start();
    const peer = new ScriptedFrontend(b);
    // CMSG_SPACE rounding leaves room for 2 fds in a 1-fd buffer: send 3.
    const efds = [native.eventfdCreate(0), native.eventfdCreate(0), native.eventfdCreate(0)];
    peer.send(FrontendRequest.SET_VRING_CALL, encodeU64(0n), { fds: efds });
    for (const fd of efds) native.close(fd);
    await until(() => reasons.length === 1);
    expect(reasons).toEqual(['too many fds: ancillary data truncated (MSG_CTRUNC)']);
    peer.close();
    expect(countResources().fds).toBe(before);
  });

  it('closes its fd and the fds of a half-read message on close, reporting the reason once', async () => {
    const reasons: string[] = [];
    const before = countResources().fds;
    const { channel, peer } = pair(() => undefined, reasons);
    const efd = native.eventfdCreate(0);
    const head = new Uint8Array(HEADER_SIZE);
    encodeHeader({ request: FrontendRequest.SET_VRING_KICK, flags: 1, size: 8 }, head);
    peer.sendRaw(head, [efd]);
    native.close(efd);
    await sleep(20);
    channel.close('first');
    channel.close('second');
    peer.close();
    expect(reasons).toEqual(['first']);
    expect(countResources().fds).toBe(before);
  });

  it('a peer that never reads its replies: reading stops once the unsent replies pass the bound, resumes when the peer reads, and the connection closes if it never does', async () => {
    const N = 2000;
    const requests = new Uint8Array(HEADER_SIZE * N);
    for (let i = 0; i < N; i++) encodeHeader({ request: FrontendRequest.GET_FEATURES, flags: 1, size: 0 }, requests.subarray(i * HEADER_SIZE));
    const big = new Uint8Array(1024);
    // Phase 1: bounded, then drained by the peer.
    let handled = 0;
    const reasons: string[] = [];
    const { channel, peer } = pair(
      (m) => {
        handled++;
        channel.send(encodeMessage(m.header.request, REPLY_FLAGS, big));
      },
      reasons,
      { maxQueuedBytes: 8192, writeStallTimeoutMs: 5000 },
    );
    peer.sendRaw(requests);
    await sleep(200);
    const stalled = handled;
    await sleep(200);
    expect(handled, 'reading stopped while the replies are unsent').toBe(stalled);
    expect(stalled).toBeLessThan(N);
    let replies = 0;
    while (replies < N) {
      await peer.recv(3000);
      replies++;
    }
    expect(handled).toBe(N);
    expect(reasons).toEqual([]);
    // Phase 2: the peer never reads: closed after the stall timeout.
    const reasons2: string[] = [];
    const p2 = pair(
      (m) => {
        p2.channel.send(encodeMessage(m.header.request, REPLY_FLAGS, big));
      },
      reasons2,
      { maxQueuedBytes: 8192, writeStallTimeoutMs: 300 },
    );
    p2.peer.sendRaw(requests);
    await until(() => reasons2.length > 0, 3000);
    expect(reasons2[0]).toMatch(/the peer does not read: \d+ bytes in \d+ message\(s\) unsent for 300 ms/);
  });
});
