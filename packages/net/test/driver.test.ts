/**
 * The control side: features, config space, protocol features, and the whole
 * driver (vhost control plane + workers + echo) under our TypeScript
 * front-end over a real socket.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  hasFeature,
} from '@vhost-ts/virtio';
import { FrontendRequest, ProtocolFeature, bits, encodeRarp, hasBit } from '@vhost-ts/vhost/protocol';
import { native } from '@vhost-ts/native';
import { createUsedBuffer } from '@vhost-ts/virtio';
import { silentLogger } from '@vhost-ts/vhost';
import { FrontendDevice, VhostUserClient, openNetDevice } from '@vhost-ts/frontend';
import { echoCheck } from './support/echo-check.js';
import {
  NET_CONFIG_SIZE,
  NET_MODULES,
  NetDriver,
  VIRTIO_NET_S_LINK_UP,
  decodeNetConfig,
  encodeNetConfig,
  netFeatureNames,
  netFeatures,
  parseMac,
  resolveNetModule,
} from '@vhost-ts/net';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempSocket(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'vts-net-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'net.sock');
}

async function startDriver(o: ConstructorParameters<typeof NetDriver>[0]): Promise<NetDriver> {
  const d = new NetDriver({ logger: silentLogger, ...o });
  await d.start();
  cleanups.push(() => d.stop());
  return d;
}

describe('config space', () => {
  it('encodes mac, status, max_virtqueue_pairs and mtu little-endian', () => {
    const b = encodeNetConfig({ mac: parseMac('52:54:00:ab:cd:ef'), status: 1, maxVirtqueuePairs: 0x0203, mtu: 9000 });
    expect(b.length).toBe(NET_CONFIG_SIZE);
    expect(Array.from(b)).toEqual([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 1, 0, 0x03, 0x02, 9000 & 0xff, 9000 >> 8]);
    expect(decodeNetConfig(b)).toEqual({ mac: parseMac('52:54:00:ab:cd:ef'), status: 1, maxVirtqueuePairs: 0x203, mtu: 9000 });
    expect(() => encodeNetConfig({ mac: new Uint8Array(5), status: 0, maxVirtqueuePairs: 1, mtu: 1500 })).toThrow(RangeError);
    expect(() => encodeNetConfig({ mac: new Uint8Array(6), status: 0, maxVirtqueuePairs: 1, mtu: 70000 })).toThrow(RangeError);
  });
});

describe('features', () => {
  it('offers MQ only with several pairs, MTU/MAC only when configured, IN_ORDER when asked', () => {
    const one = netFeatures({ queuePairs: 1, mtu: false, mac: false, inOrder: false });
    for (const b of [VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_RING_PACKED, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F_LOG_ALL]) {
      expect(hasFeature(one, b)).toBe(true);
    }
    for (const b of [VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MAC, VIRTIO_F_IN_ORDER]) expect(hasFeature(one, b)).toBe(false);
    const all = netFeatures({ queuePairs: 4, mtu: true, mac: true, inOrder: true });
    for (const b of [VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MAC, VIRTIO_F_IN_ORDER]) expect(hasFeature(all, b)).toBe(true);
    expect(netFeatureNames(all)).toContain('MRG_RXBUF');
    expect(hasFeature(netFeatures({ queuePairs: 1, mtu: false, mac: false, inOrder: false, packed: false }), VIRTIO_F_RING_PACKED)).toBe(false);
  });

  it('offers IN_ORDER for shipped modules only (a user module may complete out of order)', () => {
    const shipped = new NetDriver({ path: '/nonexistent/x.sock', module: 'echo', logger: silentLogger });
    const user = new NetDriver({ path: '/nonexistent/x.sock', module: '/tmp/my-module.js', logger: silentLogger });
    expect(hasFeature(shipped.features, VIRTIO_F_IN_ORDER)).toBe(true);
    expect(hasFeature(user.features, VIRTIO_F_IN_ORDER)).toBe(false);
    expect(() => new NetDriver({ path: '/x', queuesPerWorker: 3 })).toThrow(/even/);
  });

  it('resolves module names and paths', () => {
    expect(resolveNetModule('macswap')).toMatchObject({ shipped: true, url: NET_MODULES.macswap });
    expect(resolveNetModule('./my.js').url.href).toBe(new URL(`file://${path.resolve('my.js')}`).href);
    expect(() => resolveNetModule('nosuch')).toThrow(/unknown module/);
  });
});

describe('NetDriver over a socket', () => {
  it('answers GET_PROTOCOL_FEATURES, GET_QUEUE_NUM and GET_CONFIG for a net device', async () => {
    const sock = tempSocket();
    await startDriver({ path: sock, queuePairs: 3, mac: '52:54:00:00:00:07', mtu: 9000 });
    const client = await VhostUserClient.connect(sock, { timeoutMs: 5000 });
    cleanups.push(() => client.close());
    const features = await client.getFeatures();
    expect(hasFeature(features, VIRTIO_NET_F_MQ)).toBe(true);
    expect(hasFeature(features, VIRTIO_NET_F_MTU)).toBe(true);
    const pf = await client.getProtocolFeatures();
    for (const f of [ProtocolFeature.MQ, ProtocolFeature.RARP, ProtocolFeature.NET_MTU, ProtocolFeature.LOG_SHMFD, ProtocolFeature.CONFIG, ProtocolFeature.REPLY_ACK]) {
      expect(hasBit(pf, f)).toBe(true);
    }
    expect(hasBit(pf, ProtocolFeature.INFLIGHT_SHMFD)).toBe(false);
    // QEMU's per-pair vhost devices each ADD_MEM_REG the same regions: counted as references.
    expect(hasBit(pf, ProtocolFeature.CONFIGURE_MEM_SLOTS)).toBe(true);
    await client.setProtocolFeatures(pf);
    expect(await client.getQueueNum()).toBe(3);
    const cfg = decodeNetConfig(await client.getConfig(0, NET_CONFIG_SIZE));
    expect(cfg).toEqual({ mac: parseMac('52:54:00:00:00:07'), status: VIRTIO_NET_S_LINK_UP, maxVirtqueuePairs: 3, mtu: 9000 });
    // A partial read at an offset: max_virtqueue_pairs alone.
    expect(Array.from(await client.getConfig(8, 2))).toEqual([3, 0]);
  });

  it('does not offer NET_MTU without an MTU; offers CONFIGURE_MEM_SLOTS with one pair', async () => {
    const sock = tempSocket();
    await startDriver({ path: sock });
    const client = await VhostUserClient.connect(sock, { timeoutMs: 5000 });
    cleanups.push(() => client.close());
    const pf = await client.getProtocolFeatures();
    expect(hasBit(pf, ProtocolFeature.NET_MTU)).toBe(false);
    expect(hasBit(pf, ProtocolFeature.CONFIGURE_MEM_SLOTS)).toBe(true);
  });

  for (const packed of [false, true]) {
    it(`echoes our front-end's frames on 2 queue pairs, intact and in order (${packed ? 'packed' : 'split'})`, async () => {
      const sock = tempSocket();
      const drv = await startDriver({ path: sock, queuePairs: 2, module: 'echo' });
      const dev = await openNetDevice({ socketPath: sock, queuePairs: 2, packed });
      cleanups.push(() => dev.close());
      const result = await echoCheck(dev, { rounds: 20, batch: 64, size: 1500 });
      expect(result.bad).toBe(0);
      expect(result.received).toEqual([1280, 1280]);
      const [stats] = await drv.stats();
      expect(stats!.queues.map((q) => q.pair)).toEqual([0, 1]);
      expect(stats!.queues.map((q) => q.rxPackets)).toEqual([1280, 1280]);
      expect(stats!.queues.map((q) => q.txPackets)).toEqual([1280, 1280]);
      expect(stats!.queues.map((q) => q.rxBytes)).toEqual([1280 * 1500, 1280 * 1500]);
      expect(drv.workers(drv.devices[0]!)!.workerCount).toBe(2);
    });
  }

  it('SEND_RARP: the announcement arrives in the RX ring of queue pair 0', async () => {
    const sock = tempSocket();
    await startDriver({ path: sock, queuePairs: 1, module: 'echo' });
    const client = await VhostUserClient.connect(sock, { timeoutMs: 5000 });
    const dev = await FrontendDevice.start(client, {
      vrings: 2,
      protocolFeatures: bits(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.STATUS, ProtocolFeature.RARP),
      deviceFeatures: 1n << 15n,
    });
    cleanups.push(() => dev.close());
    const rx = dev.vrings[0]!;
    const buf = dev.memory.allocator.alloc(4096, 4096);
    const where = dev.memory.locate(buf.gpa, buf.size);
    expect(rx.ring.add([buf.gpa], [2048], 0, 1, 7)).toBeGreaterThanOrEqual(0);
    if (rx.ring.needsKick()) native.eventfdWrite(rx.kickFd, 1);
    const mac = parseMac('52:54:00:aa:bb:cc');
    await client.request(FrontendRequest.SEND_RARP, encodeRarp(mac));
    const used = createUsedBuffer<number>();
    const end = Date.now() + 5000;
    while (!rx.ring.getUsed(used)) {
      if (Date.now() > end) throw new Error('no RARP frame in RX');
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(used.token).toBe(7);
    expect(used.len).toBe(12 + 60);
    const f = where.region.u8.subarray(where.offset + 12, where.offset + 72);
    expect(Array.from(f.subarray(0, 6))).toEqual([255, 255, 255, 255, 255, 255]);
    expect(f.subarray(6, 12)).toEqual(mac);
    expect((f[12]! << 8) | f[13]!).toBe(0x8035);
  });
});
