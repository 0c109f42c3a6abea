/**
 * Per-vring state kept by the control plane (the `rte_vhost_vring` of this
 * library): size, ring addresses, notification fds, base indices and the two
 * independent states of the spec ("started/stopped" and "enabled/disabled").
 */

/** A vring's ring-index state that the data plane reads at start and writes back when it stops. */
export interface VringIndices {
  /**
   * Split: the next avail index to consume (free-running u16).
   * Packed: the next descriptor slot to consume (0..size-1).
   */
  lastAvailIdx: number;
  /** Split: the next used index to publish (u16). Packed: the next used slot (0..size-1). */
  lastUsedIdx: number;
  /** Packed only: the driver ring wrap counter expected at lastAvailIdx. */
  availWrapCounter: boolean;
  /** Packed only: the wrap counter the device writes at lastUsedIdx. */
  usedWrapCounter: boolean;
}

/**
 * What a driver reads about one vring. Everything is set by the control plane
 * and read-only to drivers, except the {@link VringIndices} fields, which the
 * data plane writes back when it stops using the ring (see
 * `VhostCallbacks.destroyDevice` and `vringStateChanged`).
 */
export interface VringInfo extends VringIndices {
  /** Vring index as in the protocol (net: 2i = RX, 2i+1 = TX). */
  readonly index: number;
  /** Ring size (SET_VRING_NUM); 0 until set. */
  readonly size: number;
  /** True when the device negotiated VIRTIO_F_RING_PACKED. */
  readonly packed: boolean;
  /** Descriptor table GPA (-1 until SET_VRING_ADDR translated). */
  readonly descGpa: number;
  /** Split: available ring GPA. Packed: driver event suppression area GPA. -1 until translated. */
  readonly availGpa: number;
  /** Split: used ring GPA. Packed: device event suppression area GPA. -1 until translated. */
  readonly usedGpa: number;
  /** SET_VRING_ADDR flags (bit 0 = VHOST_VRING_F_LOG: log used-ring writes). */
  readonly addrFlags: number;
  /** Guest address at which used-ring writes are logged (valid with VHOST_VRING_F_LOG). */
  readonly logGuestAddr: number;
  /** Kick eventfd (the front-end writes it), or -1 (none, or polling). */
  readonly kickFd: number;
  /** True when SET_VRING_KICK had the no-fd bit: poll the ring instead of waiting for kicks. */
  readonly kickPolling: boolean;
  /** Call eventfd (the back-end writes it to interrupt the guest), or -1. */
  readonly callFd: number;
  /** True when SET_VRING_CALL had the no-fd bit: the front-end polls, never write a call fd. */
  readonly callPolling: boolean;
  /** Error eventfd (SET_VRING_ERR), or -1. */
  readonly errFd: number;
  /** Started by SET_VRING_KICK, stopped by GET_VRING_BASE (or a reset). */
  readonly started: boolean;
  /** Enabled by SET_VRING_ENABLE 1 (or by SET_FEATURES without bit 30). */
  readonly enabled: boolean;
  /** Size set, addresses translated, kick (or polling) and call (or polling) present. */
  readonly ready: boolean;
  /** ready && started && enabled: the data plane may serve this ring. */
  readonly usable: boolean;
}

/** The front-end's ring addresses as received (front-end virtual addresses), kept to re-translate after a memory change. */
export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/** Internal mutable vring state; exposed to drivers as {@link VringInfo}. */
export class Vring implements VringInfo {
  readonly index: number;
  size = 0;
  packed = false;
  descGpa = -1;
  availGpa = -1;
  usedGpa = -1;
  addrFlags = 0;
  logGuestAddr = 0;
  /** Addresses from SET_VRING_ADDR (front-end VAs), or null. */
  addresses: RingAddresses | null = null;
  kickFd = -1;
  kickPolling = false;
  callFd = -1;
  callPolling = false;
  errFd = -1;
  started = false;
  enabled = false;
  lastAvailIdx = 0;
  lastUsedIdx = 0;
  availWrapCounter = true;
  usedWrapCounter = true;
  /** Some per-ring message has named this index (DPDK's "allocated" vring). */
  touched = false;

  constructor(index: number) {
    this.index = index;
  }

  get translated(): boolean {
    return this.descGpa >= 0 && this.availGpa >= 0 && this.usedGpa >= 0;
  }

  get ready(): boolean {
    return this.size > 0 && this.translated && (this.kickFd >= 0 || this.kickPolling) && (this.callFd >= 0 || this.callPolling);
  }

  get usable(): boolean {
    return this.ready && this.started && this.enabled;
  }

  /** Forgets the translated addresses (memory table gone or ring reset). */
  invalidateAddresses(): void {
    this.descGpa = -1;
    this.availGpa = -1;
    this.usedGpa = -1;
  }

  /** Every fd the ring holds (for teardown). */
  takeFds(): number[] {
    const fds = [this.kickFd, this.callFd, this.errFd].filter((fd) => fd >= 0);
    this.kickFd = -1;
    this.callFd = -1;
    this.errFd = -1;
    return fds;
  }

  /** Back to the initial state (RESET_DEVICE); returns the fds to close. */
  reset(): number[] {
    const fds = this.takeFds();
    this.size = 0;
    this.invalidateAddresses();
    this.addresses = null;
    this.addrFlags = 0;
    this.logGuestAddr = 0;
    this.kickPolling = false;
    this.callPolling = false;
    this.started = false;
    this.enabled = false;
    this.lastAvailIdx = 0;
    this.lastUsedIdx = 0;
    this.availWrapCounter = true;
    this.usedWrapCounter = true;
    this.touched = false;
    return fds;
  }
}
