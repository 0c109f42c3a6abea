/**
 * `VhostDevice`: what a driver sees of one front-end's device — the
 * `rte_vhost_get_*` family as one object. Read-only, except the vring index
 * fields the data plane writes back (see {@link VringInfo}).
 */
import { BackendRequest, DeviceStatus, ProtocolFeature, VRING_F_LOG, VHOST_F_LOG_ALL, hasBit } from '../protocol/constants.js';
import type { DirtyLogArea } from '../memory/dirty-log.js';
import type { InflightArea } from '../memory/inflight.js';
import type { GpaTranslation, MemoryRegion, MemoryView } from '../memory/table.js';
import type { DeviceState } from './state.js';
import type { VringIndices, VringInfo } from './vring.js';

/** Read-only view of the memory table. */
export interface MemoryInfo {
  /** Regions in the front-end's order (GPA range, front-end VA range, SAB). */
  readonly regions: readonly MemoryRegion[];
  /** Every region's views, ascending GPA: pass to virtio's `GuestMemory`. */
  readonly views: readonly MemoryView[];
}

/** Read-only view of the dirty log. */
export interface DirtyLogInfo {
  /** The mapping; the bitmap is `size` bytes from `offset`. */
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly size: number;
}

/** Read-only view of the inflight area. */
export interface InflightInfo {
  readonly sab: SharedArrayBuffer;
  /** Where queue 0's region starts in `sab`. */
  readonly offset: number;
  readonly size: number;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly packed: boolean;
  /** Bytes per queue region; queue i starts at offset + i * queueRegionSize. */
  readonly queueRegionSize: number;
}

/** Hooks the session gives the facade for the few actions that talk to the front-end. */
export interface DeviceActions {
  /** Timeout for back-end requests that wait for a reply. */
  readonly replyTimeoutMs: number;
  /** Logs a device-level event on the connection's logger. */
  warn(message: string): void;
}

/** One front-end's device (one connection). */
export class VhostDevice {
  /** Device id, unique in the process (also the connection number). */
  readonly id: number;
  /** Socket path of the driver (or `fd:N`). */
  readonly socketPath: string;
  private readonly state: DeviceState;
  private readonly actions: DeviceActions;

  /** @internal Created by the control plane. */
  constructor(id: number, socketPath: string, state: DeviceState, actions: DeviceActions) {
    this.id = id;
    this.socketPath = socketPath;
    this.state = state;
    this.actions = actions;
  }

  /** Negotiated virtio features (SET_FEATURES), 0n before. */
  get features(): bigint {
    return this.state.features;
  }
  /** Negotiated protocol features (SET_PROTOCOL_FEATURES), 0n before. */
  get protocolFeatures(): bigint {
    return this.state.protocolFeatures;
  }
  /** True while dirty logging is on (VHOST_F_LOG_ALL negotiated). */
  get logging(): boolean {
    return hasBit(this.state.features, VHOST_F_LOG_ALL);
  }
  /** True between `newDevice` and `destroyDevice`. */
  get running(): boolean {
    return this.state.running;
  }
  /** Virtio device status (SET_STATUS), 0 before. */
  get status(): number {
    return this.state.status;
  }
  /**
   * Marks the device as needing a reset (virtio status NEEDS_RESET, reported
   * by GET_STATUS), e.g. after the data plane met a malformed ring. The
   * front-end is expected to reset the device (RESET_DEVICE, or a stop and
   * restart). Idempotent; logs the reason once.
   */
  setNeedsReset(reason: string): void {
    if ((this.state.status & DeviceStatus.NEEDS_RESET) !== 0) return;
    this.state.status |= DeviceStatus.NEEDS_RESET;
    this.actions.warn(`device needs a reset: ${reason}`);
  }

  /** MTU from NET_SET_MTU, or null. */
  get mtu(): number | null {
    return this.state.mtu;
  }
  /** MAC of the last SEND_RARP, or null. */
  get rarpMac(): Uint8Array | null {
    return this.state.rarpMac;
  }

  /** The memory table, or null before SET_MEM_TABLE / ADD_MEM_REG. */
  get memory(): MemoryInfo | null {
    return this.state.memory;
  }

  /** The view holding all of guest-physical [gpa, gpa + len), or null. */
  translateGpa(gpa: number, len: number): GpaTranslation | null {
    return this.state.memory?.translateGpa(gpa, len) ?? null;
  }

  /** Number of vrings the front-end has named (highest index used + 1). */
  get vringCount(): number {
    return this.state.vringCount;
  }

  /** Vring `index` (0 <= index < the driver's maxQueues). */
  vring(index: number): VringInfo {
    const v = this.state.vrings[index];
    if (v === undefined) throw new RangeError(`vring ${index} out of range (max ${this.state.vrings.length})`);
    return v;
  }

  /** The vring's current indices (`rte_vhost_get_vring_base`). */
  getVringBase(index: number): VringIndices {
    const v = this.vring(index);
    return { lastAvailIdx: v.lastAvailIdx, lastUsedIdx: v.lastUsedIdx, availWrapCounter: v.availWrapCounter, usedWrapCounter: v.usedWrapCounter };
  }

  /** Writes the vring's indices back (`rte_vhost_set_vring_base`); the data plane calls it when it stops a ring. */
  setVringBase(index: number, indices: Partial<VringIndices> & Pick<VringIndices, 'lastAvailIdx' | 'lastUsedIdx'>): void {
    const v = this.vring(index) as VringIndices;
    const max = this.vring(index).packed ? 0x7fff : 0xffff;
    for (const n of [indices.lastAvailIdx, indices.lastUsedIdx]) {
      if (!Number.isInteger(n) || n < 0 || n > max) throw new RangeError(`vring ${index}: index ${n} out of range`);
    }
    v.lastAvailIdx = indices.lastAvailIdx;
    v.lastUsedIdx = indices.lastUsedIdx;
    if (indices.availWrapCounter !== undefined) v.availWrapCounter = indices.availWrapCounter;
    if (indices.usedWrapCounter !== undefined) v.usedWrapCounter = indices.usedWrapCounter;
  }

  /** The dirty log mapped by SET_LOG_BASE, or null. */
  get log(): DirtyLogInfo | null {
    return this.state.log;
  }

  /**
   * Marks guest-physical [gpa, gpa + len) dirty when logging is on
   * (`rte_vhost_log_write`). Returns false when the range is beyond the log.
   */
  logWrite(gpa: number, len: number): boolean {
    const log: DirtyLogArea | null = this.state.log;
    if (log === null || !this.logging) return true;
    return log.logRange(gpa, len);
  }

  /**
   * Logs a write to vring `index`'s used ring at byte `offset` of it
   * (`rte_vhost_log_used_vring`): only when logging is on and the ring's
   * SET_VRING_ADDR had VHOST_VRING_F_LOG, at log_guest_addr + offset.
   */
  logUsedVring(index: number, offset: number, len: number): boolean {
    const v = this.vring(index);
    if ((v.addrFlags & VRING_F_LOG) === 0) return true;
    return this.logWrite(v.logGuestAddr + offset, len);
  }

  /** The inflight area (SET_INFLIGHT_FD, or the one GET_INFLIGHT_FD created), or null. */
  get inflight(): InflightInfo | null {
    const area: InflightArea | null = this.state.inflight;
    return area;
  }

  /**
   * Tells the front-end that the config space changed (CONFIG_CHANGE_MSG on the
   * SET_BACKEND_REQ_FD channel). With REPLY_ACK negotiated, resolves once the
   * front-end acknowledged it. Rejects when CONFIG was not negotiated, there
   * is no back-end channel, or the front-end answers a failure.
   */
  async configChange(): Promise<void> {
    const pf = this.state.protocolFeatures;
    if (!hasBit(pf, ProtocolFeature.CONFIG)) throw new Error('configChange: CONFIG protocol feature not negotiated');
    const backend = this.state.backend;
    if (backend === null || backend.closed) throw new Error('configChange: no back-end request channel (SET_BACKEND_REQ_FD)');
    const needReply = hasBit(pf, ProtocolFeature.REPLY_ACK);
    const result = await backend.request(BackendRequest.CONFIG_CHANGE_MSG, new Uint8Array(0), needReply, this.actions.replyTimeoutMs);
    if (result !== 0n) throw new Error(`configChange: front-end answered failure ${result}`);
  }
}
