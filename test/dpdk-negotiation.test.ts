/**
 * A real front-end against the vhost-ts control plane: DPDK's virtio-user
 * (dpdk-testpmd from Debian's dpdk-dev, `--no-huge`) with 2 queue pairs
 * negotiates with a VhostUserDriver offering virtio-net features and the
 * device reaches newDevice with all 4 vrings usable.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { Testpmd, isTestpmdAvailable } from '@vhost-ts/peers';
import { VhostUserDriver, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1, type Logger, type VhostDevice } from '@vhost-ts/vhost';
import { ProtocolFeature, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, bits, hasBit } from '@vhost-ts/vhost/protocol';

/** virtio-net feature bits (virtio 1.1, 5.1.3). */
const VIRTIO_NET_F_MRG_RXBUF = 15;
const VIRTIO_NET_F_CTRL_VQ = 17;
const VIRTIO_NET_F_MQ = 22;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('DPDK virtio-user with 2 queue pairs reaches newDevice with 4 usable vrings', async () => {
  const avail = isTestpmdAvailable();
  expect(avail.ok, avail.ok ? '' : `dpdk-testpmd is needed (apt-get install dpdk-dev): ${avail.reason}`).toBe(true);

  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-dpdk-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'vhost-net.sock');
  const lines: string[] = [];
  const logger: Logger = {
    debug: (m) => lines.push(`debug ${m}`),
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
    error: (m) => lines.push(`error ${m}`),
  };
  let ready: (dev: VhostDevice) => void = () => undefined;
  const newDevice = new Promise<VhostDevice>((resolve) => {
    ready = resolve;
  });
  const snapshot: { usable: boolean[]; sizes: number[]; callFds: number[]; kickFds: number[] } = { usable: [], sizes: [], callFds: [], kickFds: [] };
  let destroyed = 0;
  const driver = new VhostUserDriver({
    path: socketPath,
    maxQueues: 4,
    queueNum: 2, // queue pairs, as net front-ends read GET_QUEUE_NUM
    logger,
    // CTRL_VQ is offered although DPDK emulates the control queue itself: it strips
    // the bit from SET_FEATURES and turns the guest's MQ command into SET_VRING_ENABLE.
    features: bits(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F_LOG_ALL),
    callbacks: {
      newDevice: (dev) => {
        for (let i = 0; i < dev.vringCount; i++) {
          const v = dev.vring(i);
          snapshot.usable.push(v.usable);
          snapshot.sizes.push(v.size);
          snapshot.callFds.push(v.callFd);
          snapshot.kickFds.push(v.kickFd);
        }
        ready(dev);
      },
      destroyDevice: () => {
        destroyed++;
      },
    },
  });
  await driver.start();
  cleanups.push(() => driver.stop());

  const testpmd = await Testpmd.start({ role: 'frontend', socketPath, queues: 2, autoStart: false, readyTimeoutMs: 30_000 });
  cleanups.push(async () => {
    await testpmd.close();
  });

  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`no newDevice within 30 s\nvhost-ts log:\n${lines.join('\n')}\ntestpmd:\n${testpmd.output}`)), 30_000),
  );
  const dev = await Promise.race([newDevice, timeout]);

  expect(dev.vringCount).toBe(4);
  expect(snapshot.usable).toEqual([true, true, true, true]);
  expect(snapshot.sizes.every((s) => s > 0)).toBe(true);
  expect(snapshot.callFds.every((fd) => fd >= 0) && snapshot.kickFds.every((fd) => fd >= 0)).toBe(true);
  expect(hasBit(dev.features, VIRTIO_F_VERSION_1)).toBe(true);
  expect(hasBit(dev.features, VIRTIO_NET_F_MQ)).toBe(true);
  expect(hasBit(dev.features, VHOST_USER_F_PROTOCOL_FEATURES)).toBe(true);
  expect(hasBit(dev.protocolFeatures, ProtocolFeature.REPLY_ACK)).toBe(true);
  expect(dev.memory!.regions.length).toBeGreaterThan(0);
  expect(lines.filter((l) => /refused|connection closed/.test(l))).toEqual([]);

  // testpmd quits: the device is destroyed (GET_VRING_BASE or disconnect) and the connection released.
  await testpmd.close();
  const end = Date.now() + 10_000;
  while (driver.devices.length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(driver.devices.length).toBe(0);
  expect(destroyed).toBeGreaterThanOrEqual(1);
}, 90_000);
