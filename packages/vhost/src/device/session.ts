/**
 * One connection's state machine: reads requests in order from its
 * {@link MessageChannel}, checks each against the codec's rules and the
 * handler table, runs the handler, answers (reply body, REPLY_ACK ack or
 * failure), then re-evaluates readiness and tells the driver
 * (newDevice / vringStateChanged / destroyDevice). Also the teardown that
 * releases everything the connection held.
 */
import type { NativeBinding } from '@vhost-ts/native';
import type { ConfigSpace, VhostCallbacks } from '../callbacks.js';
import { CallbackTimeoutError, VhostRequestError } from '../errors.js';
import { prefixedLogger, type Logger } from '../log.js';
import { releaseDirtyLog } from '../memory/dirty-log.js';
import { releaseInflightArea } from '../memory/inflight.js';
import { releaseRegion, type MemoryRegion, type MemoryTable } from '../memory/table.js';
import { DeviceStatus, FrontendRequest, ProtocolFeature, frontendRequestName, hasBit } from '../protocol/constants.js';
import { ProtocolError } from '../protocol/errors.js';
import { REPLY_FLAGS, encodeMessage, needsReply } from '../protocol/header.js';
import { encodeU64 } from '../protocol/payloads.js';
import { checkFrontendRequest, hasReplyBody } from '../protocol/rules.js';
import { MessageChannel, errorMessage, type ReceivedMessage } from '../transport/channel.js';
import { VhostDevice } from './device.js';
import { HANDLERS } from './handler-table.js';
import { translateRingAddresses } from './ring-translate.js';
import { DeviceState } from './state.js';

/** What the driver gives each session. */
export interface SessionConfig {
  native: NativeBinding;
  /** The driver's logger (the session prefixes it with its connection id). */
  logger: Logger;
  socketPath: string;
  maxQueues: number;
  /** GET_QUEUE_NUM answer. */
  queueNum: number;
  /** Vrings [0, n) that must be usable for newDevice; undefined = every vring the front-end named. */
  requiredQueues: number | undefined;
  offeredFeatures(): bigint;
  offeredProtocolFeatures(): bigint;
  config: ConfigSpace | undefined;
  sealRegions: boolean;
  /** Refuse guest memory, log and inflight fds that are not sealed against shrinking. */
  requireSealedMemory: boolean;
  callbackTimeoutMs: number;
  callbacks: VhostCallbacks;
}

/** A front-end request as a handler sees it. */
export interface Incoming {
  request: FrontendRequest;
  /** Spec name, for messages. */
  name: string;
  needReply: boolean;
  payload: Uint8Array;
  /** Fds that came with the message; a handler removes those it keeps ({@link takeFd}); the rest are closed. */
  fds: number[];
}

/** A handler's result: nothing (ack if NEED_REPLY) or a reply body, with fds the channel sends then closes. */
export type Outcome = void | { reply: Uint8Array; fds?: number[] };

/** Takes the next fd of a message (the handler then owns it). */
export function takeFd(msg: Incoming): number {
  const fd = msg.fds.shift();
  if (fd === undefined) throw new VhostRequestError(`${msg.name}: expected an fd`);
  return fd;
}

/** Process-wide connection counter (connection ids double as device ids). */
let nextConnectionId = 1;

export class Session {
  readonly id: number;
  readonly state: DeviceState;
  readonly device: VhostDevice;
  readonly config: SessionConfig;
  readonly native: NativeBinding;
  readonly logger: Logger;
  private readonly channel: MessageChannel;
  private inFlight: Promise<void> = Promise.resolve();
  private teardownPromise: Promise<void> | null = null;
  private resolveEnded!: () => void;
  /** Resolves once the connection is closed and everything it held is released. */
  readonly ended: Promise<void> = new Promise<void>((resolve) => {
    this.resolveEnded = resolve;
  });
  private readonly onEnded: (session: Session, reason: string) => void;

  constructor(fd: number, config: SessionConfig, onEnded: (session: Session, reason: string) => void) {
    this.id = nextConnectionId++;
    this.config = config;
    this.native = config.native;
    this.logger = prefixedLogger(config.logger, `conn#${this.id} ${config.socketPath}:`);
    this.onEnded = onEnded;
    this.state = new DeviceState(config.maxQueues);
    this.device = new VhostDevice(this.id, config.socketPath, this.state, {
      replyTimeoutMs: config.callbackTimeoutMs,
      warn: (m) => this.logger.warn(m),
    });
    this.channel = new MessageChannel({
      fd,
      native: config.native,
      logger: this.logger,
      peerSendsReplies: false,
      onMessage: (m) => {
        const p = this.handle(m);
        this.inFlight = p.catch(() => undefined);
        return p;
      },
      onClose: (reason) => {
        void this.teardown(reason);
      },
    });
  }

  /** Runs newConnection, then starts reading. */
  async start(): Promise<void> {
    this.logger.info('connected');
    try {
      await this.invoke('newConnection', this.device);
    } catch (err) {
      this.close(`newConnection failed: ${errorMessage(err)}`);
      return;
    }
    if (!this.channel.closed) this.channel.start();
  }

  /** Closes the connection; resolves when everything is released. */
  close(reason: string): Promise<void> {
    this.channel.close(reason);
    return this.ended;
  }

  // ---- message handling -----------------------------------------------------------

  private async handle(received: ReceivedMessage): Promise<void> {
    const { header } = received;
    const msg: Incoming = {
      request: header.request as FrontendRequest,
      name: frontendRequestName(header.request),
      needReply: needsReply(header.flags),
      payload: received.payload,
      fds: received.fds,
    };
    this.logger.debug(`<- ${msg.name} size ${header.size} fds ${msg.fds.length}${msg.needReply ? ' NEED_REPLY' : ''}`);
    let outcome: Outcome;
    try {
      checkFrontendRequest(header, msg.fds.length);
      const entry = HANDLERS.get(msg.request);
      if (entry === undefined) throw new VhostRequestError(`${msg.name} is not supported by this back-end`);
      if (entry.requires !== undefined && !hasBit(this.state.protocolFeatures, entry.requires)) {
        throw new VhostRequestError(`${msg.name} needs protocol feature ${ProtocolFeature[entry.requires]}, which was not negotiated`);
      }
      outcome = await entry.handle(this, msg);
    } catch (err) {
      this.closeFds(msg.fds.splice(0));
      this.refuse(msg, err);
      return;
    }
    this.closeFds(msg.fds.splice(0));
    if (outcome !== undefined) {
      this.reply(msg.request, outcome.reply, outcome.fds);
    } else if (msg.needReply && !hasReplyBody(msg.request, this.state.protocolFeatures)) {
      this.reply(msg.request, encodeU64(0n));
    }
    await this.afterMessage();
  }

  /**
   * A refused request: REPLY_ACK failure when NEED_REPLY was set (or the
   * request's own failure reply), otherwise the connection closes. A callback
   * timeout always closes.
   */
  private refuse(msg: Incoming, err: unknown): void {
    const why = errorMessage(err);
    if (err instanceof CallbackTimeoutError) throw err;
    if (!(err instanceof VhostRequestError) && !(err instanceof ProtocolError)) {
      this.logger.error(`${msg.name}: internal error: ${err instanceof Error ? (err.stack ?? why) : why}`);
    }
    const entry = HANDLERS.get(msg.request);
    if (entry?.failureReply !== undefined) {
      this.logger.warn(`${msg.name} refused: ${why}`);
      this.reply(msg.request, entry.failureReply());
      return;
    }
    if (msg.needReply && !hasReplyBody(msg.request, this.state.protocolFeatures)) {
      this.logger.warn(`${msg.name} refused (failure reply): ${why}`);
      this.reply(msg.request, encodeU64(1n));
      return;
    }
    throw new VhostRequestError(`${msg.name} refused: ${why}`);
  }

  private reply(request: number, payload: Uint8Array, fds: readonly number[] = []): void {
    this.logger.debug(`-> ${frontendRequestName(request)} reply size ${payload.byteLength}${fds.length > 0 ? ` fds ${fds.length}` : ''}`);
    this.channel.send(encodeMessage(request, REPLY_FLAGS, payload), fds);
  }

  // ---- readiness ---------------------------------------------------------------------------

  /** Device-level conditions: a memory table, and DRIVER_OK when STATUS was negotiated. */
  private deviceLevelOk(): boolean {
    const st = this.state;
    if (st.memory === null) return false;
    if (hasBit(st.protocolFeatures, ProtocolFeature.STATUS) && (st.status & DeviceStatus.DRIVER_OK) === 0) return false;
    return true;
  }

  /** DPDK's readiness rule: every required vring usable, plus the device-level conditions. */
  isReady(): boolean {
    if (!this.deviceLevelOk()) return false;
    const required = this.config.requiredQueues ?? this.state.vringCount;
    if (required === 0 || required > this.state.vrings.length) return false;
    for (let i = 0; i < required; i++) if (!this.state.vrings[i]!.usable) return false;
    return true;
  }

  /** After each accepted message: start the device, or tell the driver what changed. */
  private async afterMessage(): Promise<void> {
    if (this.channel.closed) return; // closing: the teardown destroys the device
    const st = this.state;
    if (!st.running) {
      if (!this.isReady()) return;
      try {
        await this.invoke('newDevice', this.device);
      } catch (err) {
        if (err instanceof CallbackTimeoutError) throw err;
        this.logger.error(`newDevice failed: ${errorMessage(err)}`);
        return;
      }
      st.running = true;
      st.notifiedUsable = st.vrings.map((v) => v.usable);
      this.logger.info(`device ready: ${st.vringCount} vring(s), features 0x${st.features.toString(16)}`);
      return;
    }
    if (!this.deviceLevelOk()) {
      await this.destroyDevice('DRIVER_OK cleared');
      return;
    }
    for (const v of st.vrings) {
      const usable = v.usable;
      if (usable === st.notifiedUsable[v.index]) continue;
      st.notifiedUsable[v.index] = usable;
      await this.invoke('vringStateChanged', this.device, v.index, usable);
    }
  }

  /**
   * Before a usable vring of a running device is reconfigured: tell the
   * driver it is no longer usable (the data plane stops it and writes its
   * indices back). The after-message pass re-announces it if still usable.
   */
  async quiesceRing(index: number): Promise<void> {
    const st = this.state;
    if (!st.running || st.notifiedUsable[index] !== true) return;
    st.notifiedUsable[index] = false;
    await this.invoke('vringStateChanged', this.device, index, false);
  }

  /** Stops a running device (destroyDevice, awaited). Errors other than a timeout are logged. */
  async destroyDevice(why: string): Promise<void> {
    const st = this.state;
    if (!st.running) return;
    st.running = false;
    st.notifiedUsable.fill(false);
    this.logger.info(`device stopped: ${why}`);
    try {
      await this.invoke('destroyDevice', this.device);
    } catch (err) {
      if (err instanceof CallbackTimeoutError) throw err;
      this.logger.error(`destroyDevice failed: ${errorMessage(err)}`);
    }
  }

  // ---- memory swaps ------------------------------------------------------------------------------

  /**
   * Replaces the memory table: memoryChanging (awaited, when running), swap,
   * re-translate the rings, release `released`, then memoryChanged — or
   * destroyDevice when a required ring no longer translates. If the pause
   * fails, regions new in `table` are released and the old table stays.
   */
  async replaceMemory(table: MemoryTable | null, released: readonly MemoryRegion[]): Promise<void> {
    const st = this.state;
    const old = st.memory;
    await this.whilePaused(
      () => {
        st.memory = table;
        this.retranslateRings();
        for (const r of released) releaseRegion(this.native, r);
      },
      () => {
        for (const r of table?.regions ?? []) if (!(old?.regions.includes(r) ?? false)) releaseRegion(this.native, r);
      },
    );
  }

  /**
   * Runs `apply` with the data plane paused when the device runs
   * (memoryChanging before, memoryChanged or destroyDevice after). When the
   * pause fails, `undo` runs and the error propagates.
   */
  async whilePaused(apply: () => void, undo: () => void): Promise<void> {
    const wasRunning = this.state.running;
    if (wasRunning) {
      try {
        await this.invoke('memoryChanging', this.device);
      } catch (err) {
        undo();
        throw err;
      }
    }
    apply();
    if (!wasRunning) return;
    if (!this.isReady()) {
      await this.destroyDevice('the new memory table leaves a required vring untranslatable');
      return;
    }
    // Rings that lost their translation are stopped while still paused, so the
    // data plane never resumes on them.
    const st = this.state;
    for (const v of st.vrings) {
      if (st.notifiedUsable[v.index] !== true || v.usable) continue;
      st.notifiedUsable[v.index] = false;
      await this.invoke('vringStateChanged', this.device, v.index, false);
    }
    await this.invoke('memoryChanged', this.device);
  }

  /** Re-translates every vring's addresses against the current table. */
  retranslateRings(): void {
    for (const v of this.state.vrings) {
      if (v.addresses === null) continue;
      try {
        translateRingAddresses(this, v, v.addresses);
      } catch (err) {
        v.invalidateAddresses();
        this.logger.warn(`vring ${v.index}: addresses no longer translate: ${errorMessage(err)}`);
      }
    }
  }

  // ---- callbacks -----------------------------------------------------------------------------------

  /** Calls a driver callback and awaits it with the callback timeout. */
  async invoke<K extends keyof VhostCallbacks>(name: K, ...args: Parameters<NonNullable<VhostCallbacks[K]>>): Promise<void> {
    const fn = this.config.callbacks[name] as ((...a: unknown[]) => unknown) | undefined;
    if (fn === undefined) return;
    const result = fn.apply(this.config.callbacks, args);
    if (result === null || typeof result !== 'object' || typeof (result as Promise<unknown>).then !== 'function') return;
    const ms = this.config.callbackTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CallbackTimeoutError(`${name} callback did not settle within ${ms} ms`)), ms);
    });
    try {
      await Promise.race([result as Promise<unknown>, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- teardown -----------------------------------------------------------------------------------

  private teardown(reason: string): Promise<void> {
    if (this.teardownPromise !== null) return this.teardownPromise;
    this.teardownPromise = this.releaseEverything(reason);
    return this.teardownPromise;
  }

  private async releaseEverything(reason: string): Promise<void> {
    const normal = reason === 'peer closed the connection' || reason.startsWith('driver stopped');
    if (normal) this.logger.info(`connection closed: ${reason}`);
    else this.logger.warn(`connection closed: ${reason}`);
    await this.inFlight;
    try {
      await this.destroyDevice('connection closed');
    } catch (err) {
      this.logger.error(`destroyDevice during teardown: ${errorMessage(err)}`);
    }
    const st = this.state;
    for (const v of st.vrings) this.closeFds(v.reset());
    if (st.logFd >= 0) this.closeFds([st.logFd]);
    st.logFd = -1;
    st.backend?.close('connection closed');
    st.backend = null;
    st.memory?.release(this.native);
    st.memory = null;
    if (st.log !== null) releaseDirtyLog(this.native, st.log);
    st.log = null;
    if (st.inflight !== null) releaseInflightArea(this.native, st.inflight);
    st.inflight = null;
    try {
      await this.invoke('destroyConnection', this.device, reason);
    } catch (err) {
      this.logger.error(`destroyConnection failed: ${errorMessage(err)}`);
    }
    this.onEnded(this, reason);
    this.resolveEnded();
  }

  /** Closes fds, ignoring ones already closed. */
  closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        this.native.close(fd);
      } catch {
        // already closed
      }
    }
  }
}
