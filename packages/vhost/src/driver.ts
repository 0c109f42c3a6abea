/**
 * `VhostUserDriver`: one vhost-user socket with its features, callbacks and
 * devices — the `rte_vhost_driver_*` family of rte_vhost.h as one object.
 *
 * @example
 * ```ts
 * const drv = new VhostUserDriver({ path: '/tmp/vhost-net.sock', maxQueues: 4, queueNum: 2 });
 * drv.enableFeatures(bits(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF));
 * drv.registerCallbacks({ newDevice: (dev) => startWorkers(dev), destroyDevice: (dev) => stopWorkers(dev) });
 * await drv.start();
 * ```
 */
import { native as defaultNative, type NativeBinding } from '@vhost-ts/native';
import type { ConfigSpace, VhostCallbacks } from './callbacks.js';
import type { VhostDevice } from './device/device.js';
import { Session, type SessionConfig } from './device/session.js';
import { VIRTIO_F_ACCESS_PLATFORM } from './features.js';
import { stderrLogger, type Logger } from './log.js';
import { ProtocolFeature, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, bit, bits, hasBit, protocolFeatureNames } from './protocol/constants.js';
import { errorMessage } from './transport/channel.js';
import { UnixConnector } from './transport/connector.js';
import { UnixListener } from './transport/listener.js';

/** Protocol features vhost-ts implements. */
export const IMPLEMENTED_PROTOCOL_FEATURES = bits(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.RARP,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.NET_MTU,
  ProtocolFeature.BACKEND_REQ,
  ProtocolFeature.CONFIG,
  ProtocolFeature.INFLIGHT_SHMFD,
  ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
);

/**
 * Protocol features offered by default: everything implemented (CONFIG only
 * with a config space, INFLIGHT_SHMFD only with `inflight: true`).
 */
export const DEFAULT_PROTOCOL_FEATURES = IMPLEMENTED_PROTOCOL_FEATURES;

/** Virtio features offered by default: bit 30 (protocol features) and VHOST_F_LOG_ALL; add the device's own. */
export const DEFAULT_FEATURES = bits(VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F_LOG_ALL);

/** Largest vring count: SET_VRING_KICK/CALL/ERR carry the index in 8 bits. */
export const MAX_QUEUES_LIMIT = 256;

/** Options of a {@link VhostUserDriver}. */
export interface VhostUserDriverOptions {
  /** Socket path (server: created and listened on; client: connected to). */
  path?: string;
  /** An inherited socket fd (`--fd=N`): listening unless `fdConnected`. Exclusive with `path`. */
  fd?: number;
  /** With `fd`: the fd is one already-connected front-end, not a listening socket. */
  fdConnected?: boolean;
  /** Client mode: connect to `path` instead of listening on it. */
  client?: boolean;
  /** Client mode: retry every 100..1000 ms until the front-end is there, and again after it goes away. */
  reconnect?: boolean;
  /** Number of vrings a device may use (ring indices 0..maxQueues-1), 1..256. */
  maxQueues: number;
  /**
   * GET_QUEUE_NUM answer (default `maxQueues`). Net front-ends compare it with
   * queue pairs (QEMU, DPDK): a net driver sets `maxQueues / 2`.
   */
  queueNum?: number;
  /**
   * Vrings [0, n) that must be ready for `newDevice`. Default: every vring the
   * front-end has named (DPDK's rule). A net driver whose front-end may leave
   * pairs disabled sets 2.
   */
  requiredQueues?: number;
  /** Offered virtio features (default {@link DEFAULT_FEATURES}). */
  features?: bigint;
  /** Offered protocol features (default {@link DEFAULT_PROTOCOL_FEATURES}, filtered as documented there). */
  protocolFeatures?: bigint;
  /** Device config space; offering one enables the CONFIG protocol feature. */
  config?: ConfigSpace;
  /** Offer INFLIGHT_SHMFD (GET/SET_INFLIGHT_FD), for drivers that track inflight requests (blk). */
  inflight?: boolean;
  /** Add F_SEAL_SHRINK to sealable memfds the front-end shares (default true). */
  sealRegions?: boolean;
  /**
   * Refuse (SET_MEM_TABLE, ADD_MEM_REG, SET_LOG_BASE, SET_INFLIGHT_FD) any fd
   * that is not sealed against shrinking and cannot be sealed: a memfd with
   * F_SEAL_SEAL but no F_SEAL_SHRINK, a tmpfs or hugetlbfs file. Default
   * false, because DPDK virtio-user's `--no-huge` memory is such a memfd; see
   * "Guest memory the front-end can shrink" in the README for the risk.
   */
  requireSealedMemory?: boolean;
  /** How long a callback may take before the connection is closed (default 10000 ms). */
  callbackTimeoutMs?: number;
  /** Where log lines go (default: stderr, `[vhost-ts]` prefix). */
  logger?: Logger;
  callbacks?: VhostCallbacks;
  /** The native binding (tests may inject one). */
  native?: NativeBinding;
}

/** One vhost-user socket and the devices of its connections. */
export class VhostUserDriver {
  /** The socket path, or `fd:N` for an inherited fd. */
  readonly path: string;
  private readonly options: VhostUserDriverOptions;
  private readonly native: NativeBinding;
  private readonly logger: Logger;
  private features: bigint;
  private protocolFeatures: bigint;
  private callbacks: VhostCallbacks;
  private readonly sessions = new Set<Session>();
  private listener: UnixListener | null = null;
  private connector: UnixConnector | null = null;
  private started = false;

  constructor(options: VhostUserDriverOptions) {
    if ((options.path === undefined) === (options.fd === undefined)) throw new TypeError('VhostUserDriver: give exactly one of path or fd');
    if (options.client === true && options.path === undefined) throw new TypeError('VhostUserDriver: client mode needs a path');
    if (!Number.isInteger(options.maxQueues) || options.maxQueues < 1 || options.maxQueues > MAX_QUEUES_LIMIT) {
      throw new RangeError(`VhostUserDriver: maxQueues must be 1..${MAX_QUEUES_LIMIT}`);
    }
    if (options.requiredQueues !== undefined && (!Number.isInteger(options.requiredQueues) || options.requiredQueues < 1 || options.requiredQueues > options.maxQueues)) {
      throw new RangeError('VhostUserDriver: requiredQueues must be 1..maxQueues');
    }
    this.options = options;
    this.path = options.path ?? `fd:${options.fd}`;
    this.native = options.native ?? defaultNative;
    this.logger = options.logger ?? stderrLogger();
    this.features = 0n;
    this.setFeatures(options.features ?? DEFAULT_FEATURES);
    this.protocolFeatures = 0n;
    this.setProtocolFeatures(options.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES);
    this.callbacks = options.callbacks ?? {};
  }

  // ---- features (rte_vhost_driver_*_features) ----------------------------------------------

  /**
   * Replaces the offered virtio features. Keep bit 30
   * (VHOST_USER_F_PROTOCOL_FEATURES) unless protocol features must not be
   * negotiated. VIRTIO_F_ACCESS_PLATFORM (IOTLB) is not supported.
   */
  setFeatures(features: bigint): void {
    if (features < 0n || features >= 1n << 64n) throw new RangeError('features must be a 64-bit value');
    if (hasBit(features, VIRTIO_F_ACCESS_PLATFORM)) throw new RangeError('VIRTIO_F_ACCESS_PLATFORM (IOTLB) is not supported');
    this.features = features;
  }
  /** The offered virtio features. */
  getFeatures(): bigint {
    return this.features;
  }
  /** Adds bits to the offered features. */
  enableFeatures(features: bigint): void {
    this.setFeatures(this.features | features);
  }
  /** Removes bits from the offered features. */
  disableFeatures(features: bigint): void {
    this.setFeatures(this.features & ~features);
  }

  /** Replaces the offered protocol features (bits vhost-ts does not implement throw). */
  setProtocolFeatures(features: bigint): void {
    const unknown = features & ~IMPLEMENTED_PROTOCOL_FEATURES;
    if (unknown !== 0n) throw new RangeError(`protocol features not implemented: ${protocolFeatureNames(unknown).join(', ')}`);
    this.protocolFeatures = features;
  }
  /**
   * The protocol features GET_PROTOCOL_FEATURES answers: the configured set,
   * without CONFIG when there is no config space and without INFLIGHT_SHMFD
   * unless `inflight` was asked for.
   */
  getProtocolFeatures(): bigint {
    let pf = this.protocolFeatures;
    if (this.options.config === undefined) pf &= ~bit(ProtocolFeature.CONFIG);
    if (this.options.inflight !== true) pf &= ~bit(ProtocolFeature.INFLIGHT_SHMFD);
    return pf;
  }

  /** Registers (replaces) the device callbacks (`rte_vhost_driver_callback_register`). */
  registerCallbacks(callbacks: VhostCallbacks): void {
    this.callbacks = callbacks;
  }

  /** The devices of the current connections. */
  get devices(): readonly VhostDevice[] {
    return [...this.sessions].map((s) => s.device);
  }

  // ---- start / stop -----------------------------------------------------------------------------

  /**
   * Starts listening (server), connecting (client) or serving the inherited
   * fd. Rejects when the socket cannot be set up (path in use, connect
   * refused without `reconnect`).
   */
  async start(): Promise<void> {
    if (this.started) throw new Error(`${this.path}: already started`);
    const { options } = this;
    const onConnection = (fd: number) => this.addConnection(fd);
    if (options.fd !== undefined && options.fdConnected === true) {
      this.started = true;
      this.addConnection(options.fd);
      return;
    }
    if (options.client === true) {
      this.connector = new UnixConnector({ native: this.native, logger: this.logger, path: options.path!, reconnect: options.reconnect === true, onConnection });
      this.started = true;
      try {
        this.connector.start();
      } catch (err) {
        this.started = false;
        this.connector = null;
        throw err;
      }
      return;
    }
    const listener = new UnixListener({
      native: this.native,
      logger: this.logger,
      ...(options.path !== undefined ? { path: options.path } : {}),
      ...(options.fd !== undefined ? { fd: options.fd } : {}),
      onConnection,
    });
    listener.start();
    this.listener = listener;
    this.started = true;
    this.logger.info(`${this.path}: listening`);
  }

  /**
   * Stops: closes the socket (and removes a socket file it created), stops
   * reconnecting, closes every connection (destroyDevice, destroyConnection)
   * and releases every fd and mapping. Resolves when all of it is done.
   */
  async stop(): Promise<void> {
    this.started = false;
    this.listener?.close();
    this.listener = null;
    this.connector?.close();
    this.connector = null;
    await Promise.all([...this.sessions].map((s) => s.close('driver stopped')));
  }

  private addConnection(fd: number): void {
    const config: SessionConfig = {
      native: this.native,
      logger: this.logger,
      socketPath: this.path,
      maxQueues: this.options.maxQueues,
      queueNum: this.options.queueNum ?? this.options.maxQueues,
      requiredQueues: this.options.requiredQueues,
      offeredFeatures: () => this.features,
      offeredProtocolFeatures: () => this.getProtocolFeatures(),
      config: this.options.config,
      sealRegions: this.options.sealRegions ?? true,
      requireSealedMemory: this.options.requireSealedMemory ?? false,
      callbackTimeoutMs: this.options.callbackTimeoutMs ?? 10_000,
      callbacks: this.callbacksProxy(),
    };
    let session: Session;
    try {
      session = new Session(fd, config, (s) => this.onSessionEnded(s));
    } catch (err) {
      this.logger.error(`${this.path}: cannot serve a new connection: ${errorMessage(err)}`);
      try {
        this.native.close(fd);
      } catch {
        // already closed
      }
      this.connector?.connectionEnded();
      return;
    }
    this.sessions.add(session);
    void session.start();
  }

  /** Callbacks are read at call time, so registerCallbacks applies to live connections too. */
  private callbacksProxy(): VhostCallbacks {
    return new Proxy({} as VhostCallbacks, {
      get: (_t, key: string | symbol) => {
        const fn = (this.callbacks as Record<string | symbol, unknown>)[key];
        return typeof fn === 'function' ? fn.bind(this.callbacks) : undefined;
      },
    });
  }

  private onSessionEnded(session: Session): void {
    this.sessions.delete(session);
    if (this.started) this.connector?.connectionEnded();
  }
}
