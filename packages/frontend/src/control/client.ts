/**
 * The typed vhost-user front-end control channel: one method per request,
 * each awaiting its reply (or REPLY_ACK acknowledgement) with a timeout.
 * Requests are serialised: at most one is in flight, so replies can never be
 * paired with the wrong request.
 */
import {
  decodeU64,
  encodeConfig,
  decodeConfig,
  encodeMemoryTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  decodeVringState,
  encodeSingleRegion,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  FrontendRequest,
  frontendRequestName,
  encodeMessage,
  hasReplyBody,
  PROTOCOL_VERSION,
  ProtocolFeature,
  hasBit,
  type MemoryRegionDesc,
  type VringAddr,
} from '@vhost-ts/vhost/protocol';
import { closeFds, VhostConnection, type CloseInfo, type VhostMessage } from './connection.js';
import { acceptUnix, connectUnix } from './socket.js';

/** The back-end answered a REPLY_ACK request with a non-zero status, or refused a GET_*. */
export class BackendRefusedError extends Error {
  override readonly name = 'BackendRefusedError';
  constructor(
    readonly request: number,
    readonly status: bigint,
  ) {
    super(`back-end refused ${frontendRequestName(request)} (REPLY_ACK status ${status})`);
  }
}

/** The back-end's reply broke the protocol (wrong code, flags or size). */
export class BadReplyError extends Error {
  override readonly name = 'BadReplyError';
  constructor(
    readonly request: number,
    message: string,
  ) {
    super(`bad reply to ${frontendRequestName(request)}: ${message}`);
  }
}

export interface ControlClientOptions {
  /** Timeout for every reply and for connect/accept (ms, default 5000). */
  timeoutMs?: number;
  /**
   * With REPLY_ACK negotiated, set NEED_REPLY on every request that has no
   * reply body and wait for the ack (default true): failures surface at the
   * request that caused them.
   */
  ackAll?: boolean;
  /** Log line sink for every request sent (debugging). */
  trace?: (line: string) => void;
}

export interface RequestOptions {
  fds?: readonly number[];
  /** Force NEED_REPLY on (true) or off (false); default: per ackAll. */
  needReply?: boolean;
}

export class VhostUserClient {
  readonly connection: VhostConnection;
  readonly timeoutMs: number;
  readonly ackAll: boolean;
  /** Protocol features negotiated by setProtocolFeatures (0 before). */
  protocolFeatures = 0n;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly trace: ((line: string) => void) | undefined;

  constructor(connection: VhostConnection, options: ControlClientOptions = {}) {
    this.connection = connection;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.ackAll = options.ackAll ?? true;
    this.trace = options.trace;
  }

  static async connect(path: string, options: ControlClientOptions = {}): Promise<VhostUserClient> {
    const fd = await connectUnix(path, options.timeoutMs ?? 5000);
    return new VhostUserClient(new VhostConnection(fd), options);
  }

  static async accept(path: string, options: ControlClientOptions & { onListening?: () => void } = {}): Promise<VhostUserClient> {
    const fd = await acceptUnix(path, options.timeoutMs ?? 5000, options.onListening);
    return new VhostUserClient(new VhostConnection(fd), options);
  }

  get closed(): Promise<CloseInfo> {
    return this.connection.closed;
  }

  get isClosed(): boolean {
    return this.connection.isClosed;
  }

  private get replyAck(): boolean {
    return hasBit(this.protocolFeatures, ProtocolFeature.REPLY_ACK);
  }

  /**
   * Sends a request and returns its reply payload (requests with a reply
   * body), or undefined (acked or fire-and-forget requests). Serialised.
   */
  request(request: FrontendRequest, payload: Uint8Array = new Uint8Array(0), opts: RequestOptions = {}): Promise<Uint8Array | undefined> {
    const run = (): Promise<Uint8Array | undefined> => this.doRequest(request, payload, opts);
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async doRequest(request: FrontendRequest, payload: Uint8Array, opts: RequestOptions): Promise<Uint8Array | undefined> {
    const body = hasReplyBody(request, this.protocolFeatures);
    const needReply = !body && this.replyAck && (opts.needReply ?? this.ackAll);
    const flags = PROTOCOL_VERSION | (needReply ? FLAG_NEED_REPLY : 0);
    const msg = encodeMessage(request, flags, payload);
    this.trace?.(`-> ${frontendRequestName(request)} flags=0x${flags.toString(16)} size=${payload.byteLength} fds=${opts.fds?.length ?? 0}`);
    await this.connection.send(msg, opts.fds ?? []);
    if (!body && !needReply) return undefined;
    const reply = await this.connection.receive(this.timeoutMs);
    try {
      this.checkReply(request, reply);
    } finally {
      closeFds(reply.fds);
    }
    if (needReply) {
      const status = decodeU64(reply.payload);
      if (status !== 0n) throw new BackendRefusedError(request, status);
      return undefined;
    }
    return reply.payload;
  }

  private checkReply(request: number, reply: VhostMessage): void {
    if (reply.request !== request) {
      throw new BadReplyError(request, `reply carries request code ${reply.request} (${frontendRequestName(reply.request)})`);
    }
    if ((reply.flags & FLAG_REPLY) === 0) throw new BadReplyError(request, `REPLY flag clear (flags 0x${reply.flags.toString(16)})`);
    if ((reply.flags & FLAG_VERSION_MASK) !== PROTOCOL_VERSION) throw new BadReplyError(request, `version ${reply.flags & FLAG_VERSION_MASK}`);
  }

  private async u64Reply(request: FrontendRequest): Promise<bigint> {
    const p = await this.request(request);
    if (p === undefined || p.byteLength !== 8) throw new BadReplyError(request, `expected an 8-byte u64, got ${p?.byteLength ?? 0} bytes`);
    return decodeU64(p);
  }

  // ---- requests -------------------------------------------------------------

  setOwner(): Promise<unknown> {
    return this.request(FrontendRequest.SET_OWNER);
  }
  resetOwner(): Promise<unknown> {
    return this.request(FrontendRequest.RESET_OWNER);
  }
  getFeatures(): Promise<bigint> {
    return this.u64Reply(FrontendRequest.GET_FEATURES);
  }
  setFeatures(features: bigint): Promise<unknown> {
    return this.request(FrontendRequest.SET_FEATURES, encodeU64(features));
  }
  getProtocolFeatures(): Promise<bigint> {
    return this.u64Reply(FrontendRequest.GET_PROTOCOL_FEATURES);
  }
  /** Sends SET_PROTOCOL_FEATURES (never with NEED_REPLY: REPLY_ACK is not in effect yet) and records them. */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.request(FrontendRequest.SET_PROTOCOL_FEATURES, encodeU64(features), { needReply: false });
    this.protocolFeatures = features;
  }
  async getQueueNum(): Promise<number> {
    return Number(await this.u64Reply(FrontendRequest.GET_QUEUE_NUM));
  }
  async getMaxMemSlots(): Promise<number> {
    return Number(await this.u64Reply(FrontendRequest.GET_MAX_MEM_SLOTS));
  }
  setMemTable(regions: readonly MemoryRegionDesc[], fds: readonly number[]): Promise<unknown> {
    if (regions.length !== fds.length) throw new RangeError('one fd per region');
    return this.request(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(regions), { fds });
  }
  addMemReg(region: MemoryRegionDesc, fd: number): Promise<unknown> {
    return this.request(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(region), { fds: [fd] });
  }
  remMemReg(region: MemoryRegionDesc): Promise<unknown> {
    return this.request(FrontendRequest.REM_MEM_REG, encodeSingleRegion(region));
  }
  setVringNum(index: number, num: number): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_NUM, encodeVringState({ index, num }));
  }
  setVringBase(index: number, num: number): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_BASE, encodeVringState({ index, num }));
  }
  setVringAddr(addr: VringAddr): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_ADDR, encodeVringAddr(addr));
  }
  /** GET_VRING_BASE: stops the ring; returns the back-end's next avail index (packed: the encoded base). */
  async getVringBase(index: number): Promise<number> {
    const p = await this.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (p === undefined || p.byteLength !== 8) throw new BadReplyError(FrontendRequest.GET_VRING_BASE, `expected a vring state, got ${p?.byteLength ?? 0} bytes`);
    const s = decodeVringState(p);
    if (s.index !== index) throw new BadReplyError(FrontendRequest.GET_VRING_BASE, `state for vring ${s.index}, asked for ${index}`);
    return s.num;
  }
  /** SET_VRING_KICK with an eventfd, or null for "no fd, poll" (bit 8). */
  setVringKick(index: number, fd: number | null): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_KICK, encodeVringFd({ index, noFd: fd === null }), fd === null ? {} : { fds: [fd] });
  }
  setVringCall(index: number, fd: number | null): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_CALL, encodeVringFd({ index, noFd: fd === null }), fd === null ? {} : { fds: [fd] });
  }
  setVringErr(index: number, fd: number | null): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_ERR, encodeVringFd({ index, noFd: fd === null }), fd === null ? {} : { fds: [fd] });
  }
  setVringEnable(index: number, enable: boolean): Promise<unknown> {
    return this.request(FrontendRequest.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }));
  }
  /** In-band kick (INBAND_NOTIFICATIONS): VRING_KICK with the vring index. */
  vringKick(index: number): Promise<unknown> {
    return this.request(FrontendRequest.VRING_KICK, encodeVringState({ index, num: 0 }), { needReply: false });
  }
  setStatus(status: number): Promise<unknown> {
    return this.request(FrontendRequest.SET_STATUS, encodeU64(BigInt(status)));
  }
  async getStatus(): Promise<number> {
    return Number(await this.u64Reply(FrontendRequest.GET_STATUS));
  }
  /** GET_CONFIG: `size` bytes of config space from `offset`. */
  async getConfig(offset: number, size: number, flags = 0): Promise<Uint8Array> {
    const p = await this.request(FrontendRequest.GET_CONFIG, encodeConfig({ offset, flags, data: new Uint8Array(size) }));
    if (p === undefined) throw new BadReplyError(FrontendRequest.GET_CONFIG, 'no payload');
    let c;
    try {
      c = decodeConfig(p);
    } catch (e) {
      throw new BadReplyError(FrontendRequest.GET_CONFIG, (e as Error).message);
    }
    // A back-end that cannot serve the read answers with a short (often empty) config.
    if (c.data.byteLength !== size) throw new BackendRefusedError(FrontendRequest.GET_CONFIG, BigInt(c.data.byteLength === 0 ? 1 : c.data.byteLength));
    return c.data;
  }
  setConfig(offset: number, data: Uint8Array, flags = 0): Promise<unknown> {
    return this.request(FrontendRequest.SET_CONFIG, encodeConfig({ offset, flags, data }));
  }
  resetDevice(): Promise<unknown> {
    return this.request(FrontendRequest.RESET_DEVICE);
  }

  /** Waits until every request issued so far has completed (or failed). */
  async idle(): Promise<void> {
    await this.chain;
  }

  close(): void {
    this.connection.close();
  }
}
