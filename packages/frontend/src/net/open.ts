/**
 * Opening a virtio-net device on a vhost-user socket with the options the CLI
 * and tests use: connect (or accept), then the start sequence with net's
 * feature choices.
 */
import { VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF } from '@vhost-ts/virtio';
import { VhostUserClient } from '../control/client.js';
import { FrontendDevice } from '../device.js';
import type { LayoutKind } from '../memory/layout.js';

export interface NetDeviceOptions {
  socketPath: string;
  /** Listen and accept one back-end instead of connecting. */
  server?: boolean;
  /** Called once the listening socket exists (server mode). */
  onListening?: () => void;
  queuePairs?: number;
  packed?: boolean;
  queueSize?: number;
  /** Guest memory bytes and layout. */
  memory?: number;
  layout?: LayoutKind;
  regions?: number;
  indirect?: boolean;
  eventIdx?: boolean;
  inOrder?: boolean;
  /** Take MRG_RXBUF when offered (default true). */
  mrgRxbuf?: boolean;
  /** Reply / connect timeout (ms). */
  timeoutMs?: number;
  trace?: (line: string) => void;
}

export async function openNetDevice(o: NetDeviceOptions): Promise<FrontendDevice> {
  const pairs = o.queuePairs ?? 1;
  const clientOpts = { timeoutMs: o.timeoutMs ?? 5000, ...(o.trace ? { trace: o.trace } : {}) };
  const client = o.server
    ? await VhostUserClient.accept(o.socketPath, { ...clientOpts, ...(o.onListening ? { onListening: o.onListening } : {}) })
    : await VhostUserClient.connect(o.socketPath, clientOpts);
  let deviceFeatures = 0n;
  if (o.mrgRxbuf ?? true) deviceFeatures |= 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF);
  const mq = 1n << BigInt(VIRTIO_NET_F_MQ);
  if (pairs > 1) deviceFeatures |= mq;
  return FrontendDevice.start(client, {
    vrings: 2 * pairs,
    queueSize: o.queueSize ?? 256,
    packed: o.packed ?? false,
    indirect: o.indirect ?? false,
    eventIdx: o.eventIdx ?? false,
    inOrder: o.inOrder ?? false,
    deviceFeatures,
    requiredFeatures: pairs > 1 ? mq : 0n,
    requiredQueues: pairs,
    memory: { kind: o.layout ?? 'dpdk', size: o.memory ?? 64 * 1024 * 1024, regions: o.regions ?? 2 },
  });
}
