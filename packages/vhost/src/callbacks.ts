/**
 * What a driver plugs into a {@link VhostUserDriver}: device callbacks (the
 * `vhost_device_ops` of rte_vhost.h) and an optional config space.
 *
 * ## The callback contract
 *
 * Every callback may return a Promise. The control plane AWAITS it before it
 * replies to the front-end or reads the next message, so a callback that
 * stops the data plane makes the reply mean "stopped". A callback that does
 * not settle within `callbackTimeoutMs` closes the connection (logged); a
 * callback that throws fails the request that triggered it (REPLY_ACK failure
 * or close), except `destroyDevice` and `destroyConnection`, whose errors are
 * only logged.
 *
 * Lifecycle of one connection:
 * ```
 * newConnection
 *   ( newDevice
 *       ( vringStateChanged | featuresChanged | memoryChanging (memoryChanged | destroyDevice) )*
 *     destroyDevice )*
 * destroyConnection
 * ```
 *
 * ## Who owns the vring indices when
 *
 * Each `VringInfo` has mutable `lastAvailIdx`, `lastUsedIdx`,
 * `availWrapCounter` and `usedWrapCounter`.
 * - The control plane sets them from SET_VRING_BASE (avail; split rings also
 *   take `lastUsedIdx` from the guest's used->idx when SET_VRING_ADDR is
 *   translated) while the data plane does not own the ring.
 * - From `newDevice` (for every ring whose `usable` is true) or
 *   `vringStateChanged(dev, i, true)`, the data plane owns the ring: it reads
 *   the indices once and keeps its own copy; the control plane does not
 *   touch them.
 * - Before the promise of `destroyDevice` (all rings) or
 *   `vringStateChanged(dev, i, false)` (ring i) resolves, the data plane must
 *   have stopped touching the ring(s) and written its indices back into the
 *   `VringInfo`. GET_VRING_BASE is answered from those fields right after, so
 *   the front-end receives the next avail index the data plane would have
 *   consumed.
 * - `memoryChanging` pauses the data plane without giving up ownership; after
 *   it resolves no worker may touch guest memory, the dirty log or the
 *   inflight area until `memoryChanged` (new views: re-read `dev.memory`,
 *   `dev.log`) or `destroyDevice`.
 */
import type { VhostDevice } from './device/device.js';

/** A value or a promise of it. */
export type MaybePromise<T> = T | Promise<T>;

/** Device callbacks. All optional. */
export interface VhostCallbacks {
  /** A front-end connected (the device object exists, nothing is negotiated yet). Awaited before the first message is read. */
  newConnection?(dev: VhostDevice): MaybePromise<void>;
  /**
   * The connection is gone and everything it held (fds, mappings) is
   * released; `dev` must not be used any more. Fires after `destroyDevice`.
   */
  destroyConnection?(dev: VhostDevice, reason: string): MaybePromise<void>;
  /**
   * The device is ready: every required vring (see `requiredQueues`) has its
   * size, translated addresses, kick (or polling) and call (or polling) fds,
   * is started and enabled, and DRIVER_OK is set when STATUS was negotiated.
   * Start serving every vring whose `usable` is true.
   */
  newDevice?(dev: VhostDevice): MaybePromise<void>;
  /**
   * Stop serving every vring and, before resolving, write each ring's indices
   * back into its `VringInfo`. Fires on the first stop (GET_VRING_BASE), on
   * RESET_OWNER / RESET_DEVICE, when DRIVER_OK is cleared (STATUS), when a
   * memory change leaves a required ring untranslatable, on disconnect and on
   * `driver.stop()`. The device may become ready again (`newDevice` again).
   */
  destroyDevice?(dev: VhostDevice): MaybePromise<void>;
  /**
   * While the device runs, vring `index` became usable (`enabled` true: start
   * serving it from its `VringInfo`) or stopped being usable (false: stop
   * touching it and write its indices back before resolving). Also fires
   * false-then-true around a change of a usable ring's kick/call fd, size,
   * addresses or base, so the data plane picks up the new values.
   */
  vringStateChanged?(dev: VhostDevice, index: number, enabled: boolean): MaybePromise<void>;
  /**
   * While the device runs, the negotiated features changed (only VHOST_F_LOG_ALL
   * may change then: dirty logging toggled for live migration).
   */
  featuresChanged?(dev: VhostDevice, features: bigint): MaybePromise<void>;
  /**
   * While the device runs, the memory table (SET_MEM_TABLE, ADD/REM_MEM_REG)
   * or the dirty log (SET_LOG_BASE) is about to be replaced: pause every worker
   * so none touches guest memory; resolve once paused. The old mappings are
   * released only after this resolved.
   */
  memoryChanging?(dev: VhostDevice): MaybePromise<void>;
  /**
   * The new memory table / log / inflight area is in place (`dev.memory`,
   * `dev.log`, `dev.inflight`): rebuild the views and resume. A vring whose
   * addresses no longer translate was already stopped with
   * `vringStateChanged(dev, i, false)` during the pause.
   */
  memoryChanged?(dev: VhostDevice): MaybePromise<void>;
  /** SEND_RARP: broadcast a RARP for `mac` (6 bytes) to announce a migrated guest. */
  sendRarp?(dev: VhostDevice, mac: Uint8Array): MaybePromise<void>;
  /** NET_SET_MTU: the front-end set the MTU (68..65535, already checked). Throw to refuse. */
  mtuChanged?(dev: VhostDevice, mtu: number): MaybePromise<void>;
  /** SET_STATUS: the virtio device status changed (informational). */
  statusChanged?(dev: VhostDevice, status: number): MaybePromise<void>;
}

/** A device config space (offering it enables the CONFIG protocol feature). */
export interface ConfigSpace {
  /**
   * GET_CONFIG: `size` bytes at `offset` (offset + size <= 256). Return at
   * most `size` bytes (shorter is zero-padded). Throw to answer an error
   * (a reply with an empty payload, as the spec says).
   */
  get(dev: VhostDevice, offset: number, size: number): Uint8Array;
  /**
   * SET_CONFIG: write `data` at `offset`. `flags` is 0 for writable fields, 1
   * for live migration; "back-ends MUST NOT accept SET_CONFIG for read-only
   * configuration space fields unless the live migration bit is set". Return
   * false or throw to refuse. Without `set`, SET_CONFIG is refused.
   */
  set?(dev: VhostDevice, offset: number, data: Uint8Array, flags: number): MaybePromise<void | boolean>;
}
