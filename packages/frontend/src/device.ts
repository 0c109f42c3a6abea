/**
 * A started vhost-user device seen from the driver side: guest memory, vrings
 * (driver-side rings from @vhost-ts/virtio), kick and call eventfds, and the
 * vhost-user sequences that start, stop and tear it down.
 *
 * Start: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, [GET_QUEUE_NUM],
 * [GET_CONFIG], SET_FEATURES, [SET_STATUS FEATURES_OK + GET_STATUS],
 * SET_MEM_TABLE, per vring NUM/BASE/ADDR/CALL/KICK, [SET_VRING_ENABLE 1 each],
 * [SET_STATUS DRIVER_OK]. Stop: [SET_VRING_ENABLE 0 each], GET_VRING_BASE each,
 * [SET_STATUS 0]. Close: stop if still started, then close the socket, every
 * poller and eventfd, and release every mapping.
 */
import { POLL_READABLE, type Poller } from '@vhost-ts/native';
import {
  DeviceStatus,
  ProtocolFeature,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  bits,
  hasBit,
} from '@vhost-ts/vhost/protocol';
import {
  DESC_SIZE,
  indirectPoolBytes,
  PACKED_EVENT_BYTES,
  PackedDriverRing,
  packedDescBytes,
  SplitDriverRing,
  splitAvailBytes,
  splitDescBytes,
  splitUsedBytes,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type DriverRing,
  type IndirectPool,
} from '@vhost-ts/virtio';
import { native } from './native.js';
import { FrontendMemory } from './memory/guest-memory.js';
import type { LayoutOptions } from './memory/layout.js';
import { VhostUserClient } from './control/client.js';

export type RingKind = 'split' | 'packed';

export interface DeviceOptions {
  /** Number of vrings to set up (net: 2 x queue pairs; blk: request queues). */
  vrings: number;
  /** Descriptors per vring (default 256). */
  queueSize?: number;
  /** Packed virtqueues (requires VIRTIO_F_RING_PACKED from the back-end). */
  packed?: boolean;
  /** Negotiate INDIRECT_DESC when offered, and give every ring an indirect table pool. */
  indirect?: boolean;
  /** Descriptors per indirect table (default 4). */
  indirectMax?: number;
  /** Negotiate EVENT_IDX when offered. */
  eventIdx?: boolean;
  /** Negotiate IN_ORDER when offered. */
  inOrder?: boolean;
  /**
   * Device-type feature bits to take when offered (net: MRG_RXBUF, MQ, ...).
   * Transport bits (VERSION_1, INDIRECT, EVENT_IDX, PACKED, IN_ORDER, bit 30) are handled here.
   */
  deviceFeatures?: bigint;
  /** Device-type feature bits the back-end must offer (else start fails). */
  requiredFeatures?: bigint;
  /** Protocol features to take when offered (default REPLY_ACK | MQ | STATUS, + CONFIG with `configSize`). */
  protocolFeatures?: bigint;
  /** Read this many bytes of config space with GET_CONFIG (needs CONFIG; 0 = do not). */
  configSize?: number;
  /** For GET_QUEUE_NUM: how many queues the back-end must support (net: pairs; blk: queues). */
  requiredQueues?: number;
  /** Guest memory layout (default: DPDK-like, 64 MiB). */
  memory?: LayoutOptions;
  /** Per-vring: do not enable it at start (SET_VRING_ENABLE 0 stays; enable later with enableVring). */
  startDisabled?: readonly number[];
}

/** One vring as the driver sees it. */
export interface FrontendVring {
  index: number;
  kind: RingKind;
  size: number;
  ring: DriverRing<number>;
  /** We write it to kick the back-end. */
  kickFd: number;
  /** The back-end writes it to notify us. */
  callFd: number;
  descGpa: number;
  /** Split: avail ring; packed: driver event suppression area. */
  driverGpa: number;
  /** Split: used ring; packed: device event suppression area. */
  deviceGpa: number;
  /** An indirect pool was given to the ring. */
  indirect: boolean;
  /** The pool, to rebuild the ring elsewhere (a worker thread). */
  indirectPool: IndirectPool | null;
  eventIdx: boolean;
  inOrder: boolean;
  /** The SET_VRING_BASE value sent at start. */
  base: number;
}

/** Outcome of a stop: GET_VRING_BASE per vring. */
export interface StopResult {
  bases: number[];
}

export const DEFAULT_PROTOCOL_FEATURES = bits(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.STATUS);

export class FrontendDevice {
  readonly client: VhostUserClient;
  readonly memory: FrontendMemory;
  readonly vrings: FrontendVring[] = [];
  /** Features the back-end offered / we negotiated. */
  offeredFeatures = 0n;
  features = 0n;
  offeredProtocolFeatures = 0n;
  /** Config space read at start (empty when not asked or not offered). */
  config: Uint8Array = new Uint8Array(0);
  /** GET_QUEUE_NUM answer (0 when MQ was not negotiated). */
  backendQueues = 0;
  private readonly pollers: Poller[] = [];
  /** Why the stop sequence inside close() failed (the back-end may have gone), if it did. */
  lastStopError: Error | null = null;
  private state: 'new' | 'started' | 'stopped' | 'closed' = 'new';
  readonly options: DeviceOptions;

  private constructor(client: VhostUserClient, memory: FrontendMemory, options: DeviceOptions) {
    this.client = client;
    this.memory = memory;
    this.options = options;
  }

  get protocolFeatures(): bigint {
    return this.client.protocolFeatures;
  }
  get started(): boolean {
    return this.state === 'started';
  }

  /**
   * Runs the start sequence on a connected client. On any failure everything
   * created so far is torn down (the client too) and the error is rethrown.
   */
  static async start(client: VhostUserClient, options: DeviceOptions): Promise<FrontendDevice> {
    if (!Number.isInteger(options.vrings) || options.vrings < 1 || options.vrings > 256) {
      throw new RangeError(`vrings must be 1..256, got ${options.vrings}`);
    }
    let memory: FrontendMemory;
    try {
      memory = FrontendMemory.create(options.memory ?? {});
    } catch (e) {
      client.close();
      throw e;
    }
    const dev = new FrontendDevice(client, memory, options);
    try {
      await dev.runStart();
    } catch (e) {
      await dev.close({ graceful: false });
      throw e;
    }
    return dev;
  }

  private async runStart(): Promise<void> {
    const o = this.options;
    const c = this.client;
    const packed = o.packed ?? false;
    const size = o.queueSize ?? 256;
    await c.setOwner();
    const offered = await c.getFeatures();
    this.offeredFeatures = offered;
    const required = (o.requiredFeatures ?? 0n) | (packed ? bit(VIRTIO_F_RING_PACKED) : 0n);
    if ((offered & required) !== required) {
      throw new Error(`back-end does not offer required features 0x${(required & ~offered).toString(16)} (offered 0x${offered.toString(16)})`);
    }
    let want = (o.deviceFeatures ?? 0n) | required | bit(VIRTIO_F_VERSION_1);
    if (o.indirect) want |= bit(VIRTIO_F_INDIRECT_DESC);
    if (o.eventIdx) want |= bit(VIRTIO_F_EVENT_IDX);
    if (o.inOrder) want |= bit(VIRTIO_F_IN_ORDER);
    if (hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES)) {
      want |= bit(VHOST_USER_F_PROTOCOL_FEATURES);
      const pOffered = await c.getProtocolFeatures();
      this.offeredProtocolFeatures = pOffered;
      let pWant = o.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES;
      if ((o.configSize ?? 0) > 0) pWant |= bit(ProtocolFeature.CONFIG);
      await c.setProtocolFeatures(pOffered & pWant);
    }
    const pf = c.protocolFeatures;
    if (hasBit(pf, ProtocolFeature.MQ)) {
      this.backendQueues = await c.getQueueNum();
      const need = o.requiredQueues ?? 1;
      if (this.backendQueues < need) throw new Error(`back-end supports ${this.backendQueues} queues, ${need} needed`);
    }
    if ((o.configSize ?? 0) > 0 && hasBit(pf, ProtocolFeature.CONFIG)) {
      this.config = await c.getConfig(0, o.configSize!);
    }
    this.features = offered & want;
    await c.setFeatures(this.features);
    const status = hasBit(pf, ProtocolFeature.STATUS);
    if (status) {
      const s = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
      await c.setStatus(s);
      const back = await c.getStatus();
      if ((back & DeviceStatus.FEATURES_OK) === 0) throw new Error(`back-end cleared FEATURES_OK (status 0x${back.toString(16)})`);
    }
    await c.setMemTable(this.memory.memoryTable(), this.memory.memoryTableFds());

    const eventIdx = hasBit(this.features, VIRTIO_F_EVENT_IDX);
    const indirect = hasBit(this.features, VIRTIO_F_INDIRECT_DESC) && (o.indirect ?? false);
    const inOrder = hasBit(this.features, VIRTIO_F_IN_ORDER);
    const indirectMax = o.indirectMax ?? 4;
    const alloc = this.memory.allocator;
    for (let i = 0; i < o.vrings; i++) {
      let v: FrontendVring;
      const kickFd = native.eventfdCreate(0);
      let callFd = -1;
      try {
        callFd = native.eventfdCreate(0);
        if (packed) {
          const desc = alloc.alloc(packedDescBytes(size), 4096).gpa;
          const drv = alloc.alloc(PACKED_EVENT_BYTES, 64).gpa;
          const devEv = alloc.alloc(PACKED_EVENT_BYTES, 64).gpa;
          const pool = indirect ? { gpa: alloc.alloc(indirectPoolBytes(size, indirectMax), DESC_SIZE).gpa, maxEntries: indirectMax } : null;
          const ring = new PackedDriverRing<number>(
            this.memory.memory,
            { size, descGpa: desc, driverEventGpa: drv, deviceEventGpa: devEv, eventIdx },
            { initialize: true, indirectPool: pool, inOrder },
          );
          v = { index: i, kind: 'packed', size, ring, kickFd, callFd, descGpa: desc, driverGpa: drv, deviceGpa: devEv, indirect, indirectPool: pool, eventIdx, inOrder, base: 0 };
        } else {
          const desc = alloc.alloc(splitDescBytes(size), 4096).gpa;
          const avail = alloc.alloc(splitAvailBytes(size), 64).gpa;
          const used = alloc.alloc(splitUsedBytes(size), 4096).gpa;
          const pool = indirect ? { gpa: alloc.alloc(indirectPoolBytes(size, indirectMax), DESC_SIZE).gpa, maxEntries: indirectMax } : null;
          const ring = new SplitDriverRing<number>(
            this.memory.memory,
            { size, descGpa: desc, availGpa: avail, usedGpa: used, eventIdx },
            { initialize: true, indirectPool: pool, inOrder },
          );
          v = { index: i, kind: 'split', size, ring, kickFd, callFd, descGpa: desc, driverGpa: avail, deviceGpa: used, indirect, indirectPool: pool, eventIdx, inOrder, base: 0 };
        }
      } catch (e) {
        native.close(kickFd);
        if (callFd >= 0) native.close(callFd);
        throw e;
      }
      this.vrings.push(v);
    }
    for (const v of this.vrings) {
      await c.setVringNum(v.index, v.size);
      // Split: the next avail index (0). Packed: avail slot | wrap << 15, as DPDK's virtio-user sends (0x8000 fresh).
      v.base = v.ring.vringBase;
      await c.setVringBase(v.index, v.base);
      await c.setVringAddr({
        index: v.index,
        flags: 0,
        desc: BigInt(this.memory.gpaToVa(v.descGpa)),
        used: BigInt(this.memory.gpaToVa(v.deviceGpa)),
        avail: BigInt(this.memory.gpaToVa(v.driverGpa)),
        log: 0n,
      });
      await c.setVringCall(v.index, v.callFd);
      await c.setVringKick(v.index, v.kickFd);
    }
    this.state = 'started';
    if (hasBit(this.features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      const disabled = new Set(o.startDisabled ?? []);
      for (const v of this.vrings) if (!disabled.has(v.index)) await c.setVringEnable(v.index, true);
    }
    if (status) {
      await c.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    }
    if (!this.client.ackAll || !hasBit(pf, ProtocolFeature.REPLY_ACK)) {
      // Without acks nothing told us the back-end accepted the sequence: GET_FEATURES syncs (as QEMU does).
      await c.getFeatures();
    }
  }

  /** SET_VRING_ENABLE for one vring (needs bit 30 negotiated). */
  async enableVring(index: number, enable: boolean): Promise<void> {
    await this.client.setVringEnable(index, enable);
  }

  /** Kicks vring `index` (eventfd write). */
  kick(index: number): void {
    native.eventfdWrite(this.vrings[index]!.kickFd, 1);
  }

  /**
   * Watches the call eventfd of a vring: `onCall(count)` runs on this thread's
   * loop whenever the back-end signalled (the eventfd is drained first).
   * Pollers are closed by close().
   */
  watchCalls(index: number, onCall: (count: number) => void): Poller {
    const v = this.vrings[index];
    if (v === undefined) throw new RangeError(`no vring ${index}`);
    const p = new native.Poller(v.callFd, (events, value) => {
      if (events >= 0) onCall(value);
    }, true);
    p.start(POLL_READABLE);
    this.pollers.push(p);
    return p;
  }

  /**
   * The stop sequence: SET_VRING_ENABLE 0 for every vring (with bit 30),
   * GET_VRING_BASE for every vring, SET_STATUS 0 (with STATUS).
   */
  async stop(): Promise<StopResult> {
    if (this.state !== 'started') throw new Error(`cannot stop a device that is ${this.state}`);
    this.state = 'stopped';
    const c = this.client;
    if (hasBit(this.features, VHOST_USER_F_PROTOCOL_FEATURES)) {
      for (const v of this.vrings) await c.setVringEnable(v.index, false);
    }
    const bases: number[] = [];
    for (const v of this.vrings) bases.push(await c.getVringBase(v.index));
    if (hasBit(c.protocolFeatures, ProtocolFeature.STATUS)) await c.setStatus(0);
    return { bases };
  }

  /**
   * Tears everything down. With `graceful` (default) and a started device, the
   * stop sequence runs first (errors ignored: the back-end may be gone).
   * Then: pollers, socket, eventfds, memory. Idempotent.
   */
  async close(options: { graceful?: boolean } = {}): Promise<StopResult | null> {
    if (this.state === 'closed') return null;
    let result: StopResult | null = null;
    if ((options.graceful ?? true) && this.state === 'started' && !this.client.isClosed) {
      try {
        result = await this.stop();
      } catch (e) {
        this.lastStopError = e as Error;
        result = null;
      }
    }
    this.state = 'closed';
    for (const p of this.pollers.splice(0)) p.close();
    this.client.close();
    for (const v of this.vrings) {
      native.close(v.kickFd);
      native.close(v.callFd);
    }
    this.memory.close();
    return result;
  }
}
