/**
 * Opening a virtio-blk device on a vhost-user socket: connect (or accept),
 * then the start sequence with blk's feature choices and a GET_CONFIG read.
 */
import { VIRTIO_BLK_F_MQ } from '@vhost-ts/virtio';
import { VhostUserClient } from '../control/client.js';
import { FrontendDevice } from '../device.js';
import type { LayoutKind } from '../memory/layout.js';
import { BLK_CONFIG_SIZE, BLK_DRIVER_FEATURES } from './driver.js';

export interface BlkDeviceOptions {
  socketPath: string;
  server?: boolean;
  onListening?: () => void;
  /** Request queues (default 1). */
  queues?: number;
  packed?: boolean;
  queueSize?: number;
  memory?: number;
  layout?: LayoutKind;
  regions?: number;
  indirect?: boolean;
  eventIdx?: boolean;
  timeoutMs?: number;
  trace?: (line: string) => void;
}

export async function openBlkDevice(o: BlkDeviceOptions): Promise<FrontendDevice> {
  const queues = o.queues ?? 1;
  const clientOpts = { timeoutMs: o.timeoutMs ?? 5000, ...(o.trace ? { trace: o.trace } : {}) };
  const client = o.server
    ? await VhostUserClient.accept(o.socketPath, { ...clientOpts, ...(o.onListening ? { onListening: o.onListening } : {}) })
    : await VhostUserClient.connect(o.socketPath, clientOpts);
  const mq = 1n << BigInt(VIRTIO_BLK_F_MQ);
  return FrontendDevice.start(client, {
    vrings: queues,
    queueSize: o.queueSize ?? 256,
    packed: o.packed ?? false,
    indirect: o.indirect ?? false,
    eventIdx: o.eventIdx ?? false,
    deviceFeatures: BLK_DRIVER_FEATURES,
    requiredFeatures: queues > 1 ? mq : 0n,
    requiredQueues: queues,
    configSize: BLK_CONFIG_SIZE,
    memory: { kind: o.layout ?? 'dpdk', size: o.memory ?? 64 * 1024 * 1024, regions: o.regions ?? 2 },
  });
}
