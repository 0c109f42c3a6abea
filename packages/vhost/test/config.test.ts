import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import {
  BackendRequest,
  FLAG_NEED_REPLY,
  FrontendRequest,
  ProtocolFeature,
  REPLY_FLAGS,
  bits,
  decodeConfig,
  encodeConfig,
  encodeMessage,
  encodeRarp,
  encodeU64,
} from '@vhost-ts/vhost/protocol';
import { ScriptedFrontend } from './support/frontend.js';
import { startHarness, type Harness } from './support/harness.js';
import { TEST_FEATURES, negotiate } from './support/scenario.js';

const PROTOCOL = bits(ProtocolFeature.CONFIG, ProtocolFeature.REPLY_ACK, ProtocolFeature.BACKEND_REQ, ProtocolFeature.RARP, ProtocolFeature.NET_MTU);

let h: Harness;
let fe: ScriptedFrontend;
let space: Uint8Array;

beforeEach(async () => {
  space = Uint8Array.from({ length: 60 }, (_, i) => i);
  h = await startHarness({
    features: TEST_FEATURES,
    config: {
      get: (_dev, offset, size) => {
        if (offset >= space.length) throw new Error(`offset ${offset} beyond the ${space.length}-byte config`);
        return space.subarray(offset, offset + size);
      },
      // Bytes 0..7 are writable; the rest only during migration (flags 1).
      set: (_dev, offset, data, flags) => {
        if (flags !== 1 && offset + data.length > 8) return false;
        space.set(data, offset);
        return true;
      },
    },
  });
  fe = ScriptedFrontend.connect(h.socketPath);
  await negotiate(fe, { protocol: PROTOCOL });
});

afterEach(async () => {
  fe.close();
  await h.stop();
});

describe('config space', () => {
  it('GET_CONFIG returns the driver bytes at the offset, sized as asked (zero-padded past the space)', async () => {
    let r = await fe.request(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 4, flags: 0, data: new Uint8Array(8) }));
    expect(decodeConfig(r.payload)).toEqual({ offset: 4, flags: 0, data: Uint8Array.from([4, 5, 6, 7, 8, 9, 10, 11]) });
    r = await fe.request(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 56, flags: 0, data: new Uint8Array(8) }));
    expect(Array.from(decodeConfig(r.payload).data)).toEqual([56, 57, 58, 59, 0, 0, 0, 0]);
  });

  it('answers a failing GET_CONFIG with an empty payload and keeps the connection', async () => {
    const r = await fe.request(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 100, flags: 0, data: new Uint8Array(4) }));
    expect(r.header.size).toBe(0);
    await h.logger.waitFor(/GET_CONFIG refused: offset 100 beyond/);
    const beyond = await fe.request(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 250, flags: 0, data: new Uint8Array(8) }));
    expect(beyond.header.size).toBe(0);
    expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
  });

  it('SET_CONFIG writes writable fields, refuses read-only ones unless migrating', async () => {
    expect(await fe.ack(FrontendRequest.SET_CONFIG, encodeConfig({ offset: 2, flags: 0, data: Uint8Array.from([0xaa, 0xbb]) }))).toBe(0n);
    expect(Array.from(space.subarray(2, 4))).toEqual([0xaa, 0xbb]);
    expect(await fe.ack(FrontendRequest.SET_CONFIG, encodeConfig({ offset: 20, flags: 0, data: Uint8Array.from([1]) }))).toBe(1n);
    expect(space[20]).toBe(20);
    expect(await fe.ack(FrontendRequest.SET_CONFIG, encodeConfig({ offset: 20, flags: 1, data: Uint8Array.from([1]) }))).toBe(0n);
    expect(space[20]).toBe(1);
  });

  it('configChange() sends CONFIG_CHANGE_MSG on the back-end channel and waits for the ack', async () => {
    const [ours, theirs] = native.socketpair();
    expect(await fe.ack(FrontendRequest.SET_BACKEND_REQ_FD, undefined, { fds: [theirs] })).toBe(0n);
    native.close(theirs);
    const backend = new ScriptedFrontend(ours);
    try {
      const dev = h.lastDevice();
      let settled = false;
      const done = dev.configChange().then(() => {
        settled = true;
      });
      const req = await backend.recv();
      expect(req.header).toEqual({ request: BackendRequest.CONFIG_CHANGE_MSG, flags: 1 | FLAG_NEED_REPLY, size: 0 });
      await new Promise((r) => setTimeout(r, 20));
      expect(settled).toBe(false); // waits for the front-end
      backend.sendRaw(encodeMessage(BackendRequest.CONFIG_CHANGE_MSG, REPLY_FLAGS, encodeU64(0n)));
      await done;
      // A failure answer rejects.
      const failing = dev.configChange();
      await backend.recv();
      backend.sendRaw(encodeMessage(BackendRequest.CONFIG_CHANGE_MSG, REPLY_FLAGS, encodeU64(1n)));
      await expect(failing).rejects.toThrow(/answered failure 1/);
    } finally {
      backend.close();
    }
  });
});

describe('net extras', () => {
  it('passes SEND_RARP and NET_SET_MTU to the driver; refuses an MTU out of range', async () => {
    const mac = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    expect(await fe.ack(FrontendRequest.SEND_RARP, encodeRarp(mac))).toBe(0n);
    expect(h.events.find((e) => e.name === 'sendRarp')!.args[0]).toEqual(mac);
    expect(h.lastDevice().rarpMac).toEqual(mac);
    expect(await fe.ack(FrontendRequest.NET_SET_MTU, encodeU64(9000n))).toBe(0n);
    expect(h.lastDevice().mtu).toBe(9000);
    expect(await fe.ack(FrontendRequest.NET_SET_MTU, encodeU64(67n))).toBe(1n);
    expect(h.lastDevice().mtu).toBe(9000);
  });
});
