/**
 * The control plane against a scripted in-process back-end: the start / stop /
 * teardown sequences, REPLY_ACK, timeouts, refusals, a back-end that hangs up,
 * memory-table contents per layout, and that nothing leaks.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { FLAG_NEED_REPLY, FrontendRequest as R, decodeMemoryTable, decodeVringAddr, decodeVringState, decodeU64 } from '@vhost-ts/vhost/protocol';
import {
  BackendRefusedError, ConnectionClosedError, FrontendDevice, ReplyTimeoutError, VhostConnection, VhostUserClient,
  QEMU_VA_BASE, FOUR_GIB,
} from '@vhost-ts/frontend';
import { countResources } from '../../../test/support/leaks.js';
import { FakeBackend, FAKE_FEATURES } from './support/fake-backend.js';

const open: { backend: FakeBackend; device?: FrontendDevice; client?: VhostUserClient }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) {
    if (o.device) await o.device.close({ graceful: false });
    o.client?.close();
    o.backend.close();
  }
});

function setup(opts: ConstructorParameters<typeof FakeBackend>[1] = {}, clientOpts = { timeoutMs: 1000 }) {
  const { backend, frontendFd } = FakeBackend.pair(opts);
  const client = new VhostUserClient(new VhostConnection(frontendFd), clientOpts);
  const entry: (typeof open)[number] = { backend, client };
  open.push(entry);
  return { backend, client, entry };
}

describe('start sequence', () => {
  it('sends the documented order, acks every set request, and stops cleanly', async () => {
    const { backend, client, entry } = setup();
    const dev = await FrontendDevice.start(client, { vrings: 2, queueSize: 64, deviceFeatures: 1n << 15n });
    entry.device = dev;
    const seq = backend.requests();
    expect(seq).toEqual([
      R.SET_OWNER, R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.SET_PROTOCOL_FEATURES, R.GET_QUEUE_NUM, R.SET_FEATURES,
      R.SET_STATUS, R.GET_STATUS, R.SET_MEM_TABLE,
      R.SET_VRING_NUM, R.SET_VRING_BASE, R.SET_VRING_ADDR, R.SET_VRING_CALL, R.SET_VRING_KICK,
      R.SET_VRING_NUM, R.SET_VRING_BASE, R.SET_VRING_ADDR, R.SET_VRING_CALL, R.SET_VRING_KICK,
      R.SET_VRING_ENABLE, R.SET_VRING_ENABLE, R.SET_STATUS,
    ]);
    // NEED_REPLY on every request without a reply body once REPLY_ACK is in effect; never on SET_PROTOCOL_FEATURES.
    for (const m of backend.log) {
      const hasBody = [R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.GET_QUEUE_NUM, R.GET_STATUS].includes(m.request);
      const beforeAck = [R.SET_OWNER, R.SET_PROTOCOL_FEATURES].includes(m.request);
      expect(!!(m.flags & FLAG_NEED_REPLY), `flags of request ${m.request}`).toBe(!hasBody && !beforeAck);
    }
    expect(backend.features).toBe(FAKE_FEATURES & ((1n << 32n) | (1n << 30n) | (1n << 15n)));
    expect(backend.status).toBe(0xf);
    const kicks = backend.log.filter((m) => m.request === R.SET_VRING_KICK || m.request === R.SET_VRING_CALL);
    expect(kicks.every((m) => m.fds === 1)).toBe(true);
    const stop = await dev.stop();
    expect(stop.bases).toEqual([0, 0]);
    const tail = backend.requests().slice(seq.length);
    expect(tail).toEqual([R.SET_VRING_ENABLE, R.SET_VRING_ENABLE, R.GET_VRING_BASE, R.GET_VRING_BASE, R.SET_STATUS]);
    expect(backend.status).toBe(0);
  });

  it('without protocol features: no bit 30, no SET_VRING_ENABLE, a GET_FEATURES sync at the end', async () => {
    const { backend, client, entry } = setup({ features: 1n << 32n });
    entry.device = await FrontendDevice.start(client, { vrings: 2, queueSize: 16 });
    const seq = backend.requests();
    expect(seq).not.toContain(R.GET_PROTOCOL_FEATURES);
    expect(seq).not.toContain(R.SET_VRING_ENABLE);
    expect(seq[seq.length - 1]).toBe(R.GET_FEATURES);
    expect(backend.features).toBe(1n << 32n);
    expect(backend.log.every((m) => (m.flags & FLAG_NEED_REPLY) === 0)).toBe(true);
  });

  it('packed rings: RING_PACKED negotiated and SET_VRING_BASE carries the wrap counter (0x8000)', async () => {
    const { backend, client, entry } = setup();
    entry.device = await FrontendDevice.start(client, { vrings: 2, queueSize: 100, packed: true });
    expect((backend.features >> 34n) & 1n).toBe(1n);
    const bases = backend.log.filter((m) => m.request === R.SET_VRING_BASE).map((m) => decodeVringState(m.payload).num);
    expect(bases).toEqual([0x8000, 0x8000]);
  });

  it('refuses to start when a required feature is missing (and cleans up)', async () => {
    const { client } = setup({ features: (1n << 32n) | (1n << 30n) });
    const before = native.liveMappings();
    await expect(FrontendDevice.start(client, { vrings: 2, packed: true })).rejects.toThrow(/required features/);
    expect(client.isClosed).toBe(true);
    expect(native.liveMappings()).toBe(before);
  });

  it('GET_QUEUE_NUM below the queues needed fails the start', async () => {
    const { client } = setup({ queueNum: 1 });
    await expect(FrontendDevice.start(client, { vrings: 4, requiredQueues: 2 })).rejects.toThrow(/supports 1 queues, 2 needed/);
  });

  it('a REPLY_ACK failure surfaces as BackendRefusedError at the request that failed', async () => {
    const { client } = setup({ refuse: [R.SET_MEM_TABLE] });
    const err = await FrontendDevice.start(client, { vrings: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendRefusedError);
    expect((err as BackendRefusedError).request).toBe(R.SET_MEM_TABLE);
  });

  it('a back-end that never answers times out (the event loop stays free)', async () => {
    const { client } = setup({ silent: [R.GET_FEATURES] }, { timeoutMs: 150 });
    let ticks = 0;
    const t = setInterval(() => ticks++, 10);
    const t0 = Date.now();
    const err = await FrontendDevice.start(client, { vrings: 2 }).catch((e: unknown) => e);
    clearInterval(t);
    expect(err).toBeInstanceOf(ReplyTimeoutError);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(ticks).toBeGreaterThan(3);
  });

  it('a back-end that hangs up mid-sequence gives ConnectionClosedError', async () => {
    const { client } = setup({ closeAfter: R.SET_FEATURES });
    const err = await FrontendDevice.start(client, { vrings: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionClosedError);
    expect((err as ConnectionClosedError).info.by).toBe('peer');
  });

  it('reads config space with GET_CONFIG when asked (CONFIG negotiated)', async () => {
    const config = Uint8Array.from({ length: 60 }, (_, i) => i + 1);
    const { backend, client, entry } = setup({ config });
    entry.device = await FrontendDevice.start(client, { vrings: 1, configSize: 60 });
    expect([...entry.device.config]).toEqual([...config]);
    expect((backend.protocolFeatures >> 9n) & 1n).toBe(1n);
  });
});

describe('memory table', () => {
  it('qemu layout: two regions of one memfd (same fd twice), GPA 0 and 4 GiB, ring addresses are VAs', async () => {
    const { backend, client, entry } = setup();
    entry.device = await FrontendDevice.start(client, { vrings: 2, queueSize: 64, memory: { kind: 'qemu', size: 8 << 20 } });
    const mt = backend.log.find((m) => m.request === R.SET_MEM_TABLE)!;
    expect(mt.fds).toBe(2);
    const regions = decodeMemoryTable(mt.payload);
    expect(regions.map((r) => [r.guestPhysAddr, r.mmapOffset])).toEqual([[0n, 0n], [BigInt(FOUR_GIB), 4n << 20n]]);
    expect(regions[0]!.userspaceAddr).toBe(BigInt(QEMU_VA_BASE));
    for (const a of backend.log.filter((m) => m.request === R.SET_VRING_ADDR).map((m) => decodeVringAddr(m.payload))) {
      expect(a.desc >= BigInt(QEMU_VA_BASE)).toBe(true);
      expect(a.used >= BigInt(QEMU_VA_BASE)).toBe(true);
    }
  });

  it('multi layout: one fd per region', async () => {
    const { backend, client, entry } = setup();
    entry.device = await FrontendDevice.start(client, { vrings: 2, queueSize: 64, memory: { kind: 'multi', size: 12 << 20, regions: 3 } });
    const mt = backend.log.find((m) => m.request === R.SET_MEM_TABLE)!;
    expect(mt.fds).toBe(3);
    expect(decodeMemoryTable(mt.payload)).toHaveLength(3);
  });
});

describe('teardown', () => {
  it('closes every fd and releases every mapping, repeatedly', async () => {
    const run = async (): Promise<void> => {
      const { backend, frontendFd } = FakeBackend.pair();
      const client = new VhostUserClient(new VhostConnection(frontendFd), { timeoutMs: 1000 });
      const dev = await FrontendDevice.start(client, { vrings: 4, queueSize: 64, memory: { kind: 'multi', size: 4 << 20, regions: 2 } });
      const r = await dev.close();
      expect(r?.bases).toHaveLength(4);
      expect(dev.memory.closed).toBe(true);
      backend.close();
    };
    await run(); // warm-up: lazily created handles
    const before = countResources();
    const live = native.liveMappings();
    for (let i = 0; i < 5; i++) await run();
    expect(countResources().fds).toBe(before.fds);
    // liveMappings counts mappings not released yet: every one we (and the fake) made was released.
    expect(native.liveMappings()).toBe(live);
  });

  it('close() after the back-end vanished does not hang and still frees everything', async () => {
    const { backend, client } = setup();
    const dev = await FrontendDevice.start(client, { vrings: 2, queueSize: 32 });
    backend.close();
    await client.closed;
    expect(await dev.close()).toBe(null);
  });

  it('GET_VRING_BASE reply is checked', async () => {
    const { client } = setup();
    await client.setOwner();
    expect(decodeU64(new Uint8Array(8))).toBe(0n);
    await expect(client.getVringBase(3)).resolves.toBe(0);
  });
});
