/**
 * A scriptable in-process vhost-user back-end for the front-end's unit tests:
 * answers the control messages (recording each), maps the memory table it is
 * given, builds device-side rings (from @vhost-ts/virtio) from SET_VRING_ADDR,
 * and can run a net data path (echo, sink, source) with fault injection
 * (drop, duplicate, corrupt, reorder). Not a product: just enough back-end to
 * check what our front-end sends and does.
 */
import { native, POLL_READABLE, type Poller } from '@vhost-ts/native';
import {
  decodeMemoryTable,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  decodeConfig,
  encodeU64,
  encodeVringState,
  FLAG_NEED_REPLY,
  FrontendRequest,
  encodeMessage,
  REPLY_FLAGS,
} from '@vhost-ts/vhost/protocol';
import {
  Chain,
  GuestMemory,
  PackedDeviceRing,
  SplitDeviceRing,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_RING_PACKED,
  type DeviceRing,
} from '@vhost-ts/virtio';
import { VhostConnection, type VhostMessage } from '@vhost-ts/frontend';

export interface RecordedMessage {
  request: number;
  flags: number;
  size: number;
  fds: number;
  payload: Uint8Array;
}

interface VringState {
  num: number;
  base: number;
  addr: ReturnType<typeof decodeVringAddr> | null;
  kickFd: number;
  callFd: number;
  enabled: boolean;
  ring: DeviceRing | null;
}

export type Fault = 'none' | 'drop' | 'duplicate' | 'corrupt' | 'swap';

export interface FakeBackendOptions {
  features?: bigint;
  protocolFeatures?: bigint;
  queueNum?: number;
  config?: Uint8Array;
  /** Requests answered with REPLY_ACK status 1. */
  refuse?: number[];
  /** Requests never answered (to test timeouts). */
  silent?: number[];
  /** Request after which the back-end closes the connection. */
  closeAfter?: number;
}

/** Offered by default: VERSION_1, bit 30, MRG_RXBUF, MQ, EVENT_IDX, INDIRECT, RING_PACKED. */
export const FAKE_FEATURES = (1n << 32n) | (1n << 30n) | (1n << 15n) | (1n << 22n) | (1n << 29n) | (1n << 28n) | (1n << 34n);
/** MQ, REPLY_ACK, CONFIG, STATUS. */
export const FAKE_PROTOCOL_FEATURES = (1n << 0n) | (1n << 3n) | (1n << 9n) | (1n << 16n);

export class FakeBackend {
  readonly conn: VhostConnection;
  readonly log: RecordedMessage[] = [];
  readonly vrings = new Map<number, VringState>();
  features = 0n;
  protocolFeatures = 0n;
  status = 0;
  memory: GuestMemory | null = null;
  memTable: ReturnType<typeof decodeMemoryTable> = [];
  private sabs: SharedArrayBuffer[] = [];
  private readonly kickPollers: Poller[] = [];
  private readonly o: Required<Omit<FakeBackendOptions, 'closeAfter'>> & { closeAfter: number | undefined };
  private dataTimer: NodeJS.Immediate | undefined;
  fault: Fault = 'none';
  /** Apply the fault to every n-th frame. */
  faultEvery = 10;
  private frames = 0;
  private held: Uint8Array | null = null;
  private readonly chainA = new Chain(64);
  private readonly chainB = new Chain(64);
  private readonly scratch = new Uint8Array(65536 + 64);
  /** Frames the data path took from TX rings / put in RX rings. */
  txFrames = 0;
  rxFrames = 0;
  /** source mode: frames to inject per step. */
  sourceFrame: Uint8Array | null = null;

  constructor(fd: number, options: FakeBackendOptions = {}) {
    this.o = {
      features: options.features ?? FAKE_FEATURES,
      protocolFeatures: options.protocolFeatures ?? FAKE_PROTOCOL_FEATURES,
      queueNum: options.queueNum ?? 8,
      config: options.config ?? new Uint8Array(0),
      refuse: options.refuse ?? [],
      silent: options.silent ?? [],
      closeAfter: options.closeAfter,
    };
    this.conn = new VhostConnection(fd, { onUnsolicited: (m) => this.onMessage(m) });
  }

  /** Our end is `fds[1]` of a socketpair; the front-end gets `fds[0]`. */
  static pair(options: FakeBackendOptions = {}): { backend: FakeBackend; frontendFd: number } {
    const [a, b] = native.socketpair();
    return { backend: new FakeBackend(b, options), frontendFd: a };
  }

  /** Listens on `path`, accepts one front-end, and wraps it. */
  static async listen(path: string, options: FakeBackendOptions = {}, timeoutMs = 5000): Promise<FakeBackend> {
    const { acceptUnix } = await import('@vhost-ts/frontend');
    const fd = await acceptUnix(path, timeoutMs);
    return new FakeBackend(fd, options);
  }

  /** Connects to a front-end listening on `path` (server mode of the front-end). */
  static async connect(path: string, options: FakeBackendOptions = {}, timeoutMs = 5000): Promise<FakeBackend> {
    const { connectUnix } = await import('@vhost-ts/frontend');
    return new FakeBackend(await connectUnix(path, timeoutMs), options);
  }

  requests(): number[] {
    return this.log.map((m) => m.request);
  }

  private reply(request: number, payload: Uint8Array): void {
    void this.conn.send(encodeMessage(request, REPLY_FLAGS, payload)).catch(() => undefined);
  }

  private vring(i: number): VringState {
    let v = this.vrings.get(i);
    if (!v) {
      v = { num: 0, base: 0, addr: null, kickFd: -1, callFd: -1, enabled: false, ring: null };
      this.vrings.set(i, v);
    }
    return v;
  }

  private vaToGpa(va: bigint): number {
    for (const r of this.memTable) {
      if (va >= r.userspaceAddr && va < r.userspaceAddr + r.memorySize) return Number(r.guestPhysAddr + (va - r.userspaceAddr));
    }
    throw new Error(`VA 0x${va.toString(16)} not in the memory table`);
  }

  private onMessage(m: VhostMessage): void {
    this.log.push({ request: m.request, flags: m.flags, size: m.size, fds: m.fds.length, payload: m.payload });
    const R = FrontendRequest;
    let fdsUsed = false;
    if (this.o.silent.includes(m.request)) {
      for (const fd of m.fds) native.close(fd);
      return;
    }
    let body: Uint8Array | null = null;
    let ok = true;
    switch (m.request) {
      case R.GET_FEATURES:
        body = encodeU64(this.o.features);
        break;
      case R.SET_FEATURES:
        this.features = decodeU64(m.payload);
        break;
      case R.GET_PROTOCOL_FEATURES:
        body = encodeU64(this.o.protocolFeatures);
        break;
      case R.SET_PROTOCOL_FEATURES:
        this.protocolFeatures = decodeU64(m.payload);
        break;
      case R.GET_QUEUE_NUM:
        body = encodeU64(BigInt(this.o.queueNum));
        break;
      case R.GET_CONFIG: {
        const c = decodeConfig(m.payload);
        const data = new Uint8Array(c.data.byteLength);
        data.set(this.o.config.subarray(c.offset, c.offset + c.data.byteLength));
        body = encodeConfig({ offset: c.offset, flags: c.flags, data });
        break;
      }
      case R.SET_STATUS:
        this.status = Number(decodeU64(m.payload));
        break;
      case R.GET_STATUS:
        body = encodeU64(BigInt(this.status));
        break;
      case R.SET_MEM_TABLE: {
        this.memTable = decodeMemoryTable(m.payload);
        for (const s of this.sabs) native.release(s);
        this.sabs = this.memTable.map((r, i) => native.mmap(m.fds[i]!, Number(r.mmapOffset), Number(r.memorySize)));
        this.memory = new GuestMemory(
          this.memTable.map((r, i) => ({ gpa: Number(r.guestPhysAddr), size: Number(r.memorySize), sab: this.sabs[i]!, sabOffset: 0 })),
        );
        break;
      }
      case R.SET_VRING_NUM: {
        const s = decodeVringState(m.payload);
        this.vring(s.index).num = s.num;
        break;
      }
      case R.SET_VRING_BASE: {
        const s = decodeVringState(m.payload);
        this.vring(s.index).base = s.num;
        break;
      }
      case R.SET_VRING_ADDR: {
        const a = decodeVringAddr(m.payload);
        this.vring(a.index).addr = a;
        break;
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL: {
        const p = decodeVringFd(m.payload);
        const v = this.vring(p.index);
        const fd = m.fds[0] ?? -1;
        fdsUsed = true;
        if (m.request === R.SET_VRING_KICK) {
          if (v.kickFd >= 0) native.close(v.kickFd);
          v.kickFd = fd;
          this.startRing(p.index);
        } else {
          if (v.callFd >= 0) native.close(v.callFd);
          v.callFd = fd;
        }
        break;
      }
      case R.SET_VRING_ENABLE: {
        const s = decodeVringState(m.payload);
        this.vring(s.index).enabled = s.num === 1;
        break;
      }
      case R.GET_VRING_BASE: {
        const s = decodeVringState(m.payload);
        const v = this.vring(s.index);
        const base = v.ring ? v.ring.vringBase : v.base;
        v.ring = null;
        body = encodeVringState({ index: s.index, num: base });
        break;
      }
      case R.SET_OWNER:
        break;
      default:
        ok = false;
    }
    if (!fdsUsed) for (const fd of m.fds) native.close(fd);
    if (this.o.refuse.includes(m.request)) ok = false;
    if (body !== null) this.reply(m.request, body);
    else if (m.flags & FLAG_NEED_REPLY) this.reply(m.request, encodeU64(ok ? 0n : 1n));
    if (this.o.closeAfter === m.request) this.conn.close();
  }

  private startRing(i: number): void {
    const v = this.vring(i);
    if (!this.memory || !v.addr) return;
    const eventIdx = ((this.features >> BigInt(VIRTIO_F_EVENT_IDX)) & 1n) !== 0n;
    const desc = this.vaToGpa(v.addr.desc);
    const avail = this.vaToGpa(v.addr.avail);
    const used = this.vaToGpa(v.addr.used);
    if ((this.features >> BigInt(VIRTIO_F_RING_PACKED)) & 1n) {
      v.ring = new PackedDeviceRing(this.memory, { size: v.num, descGpa: desc, driverEventGpa: avail, deviceEventGpa: used, eventIdx }, { vringBase: v.base });
    } else {
      v.ring = new SplitDeviceRing(this.memory, { size: v.num, descGpa: desc, availGpa: avail, usedGpa: used, eventIdx }, { lastAvailIdx: v.base });
    }
  }

  /** The net header length the front-end uses (12 with VERSION_1 or MRG_RXBUF). */
  get hdrLen(): number {
    return (this.features >> 32n) & 1n || (this.features >> 15n) & 1n ? 12 : 10;
  }

  /**
   * Starts the data path: `echo` moves frames from TX ring 2q+1 to RX ring 2q
   * (applying the fault), `sink` consumes TX, `source` fills RX with `sourceFrame`.
   */
  startData(mode: 'echo' | 'sink' | 'source'): void {
    const step = (): void => {
      this.dataStep(mode);
      this.dataTimer = setImmediate(step);
    };
    this.dataTimer = setImmediate(step);
  }

  stopData(): void {
    if (this.dataTimer) clearImmediate(this.dataTimer);
    this.dataTimer = undefined;
  }

  private notify(v: VringState): void {
    if (v.ring && v.ring.needsNotify() && v.callFd >= 0) native.eventfdWrite(v.callFd, 1);
  }

  private dataStep(mode: 'echo' | 'sink' | 'source'): void {
    if (!this.memory) return;
    const pairs = Math.floor(this.vrings.size / 2);
    for (let q = 0; q < pairs; q++) {
      const rx = this.vrings.get(2 * q);
      const tx = this.vrings.get(2 * q + 1);
      if (!rx?.ring || !tx?.ring) continue;
      if (mode === 'source' && this.sourceFrame) {
        for (let k = 0; k < 32; k++) {
          this.scratch.set(this.sourceFrame, 0);
          if (!this.deliverFrame(rx, this.sourceFrame.byteLength)) break;
        }
        this.notify(rx);
        continue;
      }
      for (let k = 0; k < 64 && tx.ring.pop(this.chainA); k++) {
        const len = this.chainA.readableBytes - this.hdrLen;
        this.chainA.read(this.hdrLen, this.scratch, 0, len);
        tx.ring.push(this.chainA.head, 0);
        this.txFrames++;
        if (mode === 'sink') continue;
        this.frames++;
        const hit = this.fault !== 'none' && this.frames % this.faultEvery === 0;
        if (hit && this.fault === 'drop') continue;
        if (hit && this.fault === 'corrupt') this.scratch[len - 1]! ^= 0x40;
        if (hit && this.fault === 'swap') {
          this.held = this.scratch.slice(0, len);
          continue;
        }
        this.deliverFrame(rx, len);
        if (hit && this.fault === 'duplicate') this.deliverFrame(rx, len);
        if (this.held) {
          this.scratch.set(this.held, 0);
          const l = this.held.byteLength;
          this.held = null;
          this.deliverFrame(rx, l);
        }
      }
      tx.ring.flush();
      this.notify(tx);
      this.notify(rx);
    }
  }

  /** deliver() with the first buffer's header tracked for num_buffers. */
  private deliverFrame(rx: VringState, len: number): boolean {
    const ring = rx.ring!;
    const hdr = this.hdrLen;
    const mrg = ((this.features >> 15n) & 1n) !== 0n;
    let done = 0;
    let nb = 0;
    const heads: number[] = [];
    const lens: number[] = [];
    let firstSeg: Uint8Array | null = null;
    do {
      if (!ring.pop(this.chainB)) break;
      const first = nb === 0;
      const room = this.chainB.writableBytes - (first ? hdr : 0);
      const n = Math.min(room, len - done);
      if (first) {
        firstSeg = this.chainB.segment(this.chainB.readableCount);
        firstSeg.fill(0, 0, hdr);
        this.chainB.write(hdr, this.scratch, done, n);
        lens.push(hdr + n);
      } else {
        this.chainB.write(0, this.scratch, done, n);
        lens.push(n);
      }
      heads.push(this.chainB.head);
      done += n;
      nb++;
    } while (mrg && done < len);
    if (nb === 0) return false;
    if (mrg && firstSeg) new DataView(firstSeg.buffer, firstSeg.byteOffset, firstSeg.byteLength).setUint16(10, nb, true);
    for (let i = 0; i < heads.length; i++) ring.push(heads[i]!, lens[i]!);
    ring.flush();
    this.rxFrames++;
    return true;
  }

  /** Watches kick eventfds (counts them); the data path polls anyway. */
  watchKicks(onKick: (vring: number) => void): void {
    for (const [i, v] of this.vrings) {
      if (v.kickFd < 0) continue;
      const p = new native.Poller(v.kickFd, () => onKick(i), true);
      p.start(POLL_READABLE);
      this.kickPollers.push(p);
    }
  }

  close(): void {
    this.stopData();
    for (const p of this.kickPollers.splice(0)) p.close();
    this.conn.close();
    for (const v of this.vrings.values()) {
      if (v.kickFd >= 0) native.close(v.kickFd);
      if (v.callFd >= 0) native.close(v.callFd);
      v.kickFd = v.callFd = -1;
      v.ring = null;
    }
    for (const s of this.sabs) native.release(s);
    this.sabs = [];
    this.memory = null;
  }
}
