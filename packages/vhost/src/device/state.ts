/**
 * Everything the control plane knows about one connection's device. Owned
 * and mutated by the session (the state machine); drivers see it through
 * the read-only `VhostDevice` facade.
 */
import type { DirtyLogArea } from '../memory/dirty-log.js';
import type { InflightArea } from '../memory/inflight.js';
import type { MemoryTable } from '../memory/table.js';
import type { BackendChannel } from './backend-channel.js';
import { Vring } from './vring.js';

export class DeviceState {
  /** Negotiated virtio features (SET_FEATURES). */
  features = 0n;
  /** True once SET_FEATURES arrived. */
  featuresSet = false;
  /** Negotiated protocol features (SET_PROTOCOL_FEATURES). */
  protocolFeatures = 0n;
  /** SET_OWNER seen. */
  owner = false;
  /** Virtio device status (SET_STATUS). */
  status = 0;
  /** NET_SET_MTU value, or null. */
  mtu: number | null = null;
  /** Last SEND_RARP MAC, or null. */
  rarpMac: Uint8Array | null = null;
  memory: MemoryTable | null = null;
  log: DirtyLogArea | null = null;
  /** SET_LOG_FD eventfd (kept, closed at teardown), or -1. */
  logFd = -1;
  inflight: InflightArea | null = null;
  backend: BackendChannel | null = null;
  /** newDevice resolved and no destroyDevice since. */
  running = false;
  /** Per vring: the `usable` value the driver was last told (newDevice / vringStateChanged). */
  notifiedUsable: boolean[];
  readonly vrings: Vring[];

  constructor(maxQueues: number) {
    this.vrings = Array.from({ length: maxQueues }, (_, i) => new Vring(i));
    this.notifiedUsable = new Array<boolean>(maxQueues).fill(false);
  }

  /** Number of vrings the front-end has named so far (highest touched index + 1). */
  get vringCount(): number {
    for (let i = this.vrings.length - 1; i >= 0; i--) if (this.vrings[i]!.touched) return i + 1;
    return 0;
  }
}
