/**
 * Drives the blk module in-process: a guest (virtio's driver-side rings over
 * SharedArrayBuffer memory, building virtio-blk requests) and a stand-in for
 * the queue-worker runtime (QueueContext / QueueRing over virtio's device-side
 * rings, with the runtime's publish rules: completions staged during a module
 * call are published after it; completions outside a call at the next
 * microtask).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  BLK_REQ_HDR_SIZE,
  Chain,
  DirtyLog,
  GuestMemory,
  PACKED_EVENT_BYTES,
  PackedDeviceRing,
  PackedDriverRing,
  SplitDeviceRing,
  SplitDriverRing,
  createUsedBuffer,
  indirectPoolBytes,
  packedDescBytes,
  splitAvailBytes,
  splitDescBytes,
  splitUsedBytes,
  type DeviceRing,
  type DriverRing,
} from '@vhost-ts/virtio';
import type { Burst, QueueContext, QueueModule, QueueRing } from '@vhost-ts/workers/module-api';

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** A temp dir with a backing file; remove() deletes it. */
export function tempBacking(bytes: number, fill?: (buf: Uint8Array) => void): { dir: string; file: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-blk-'));
  const file = path.join(dir, 'disk.img');
  const buf = new Uint8Array(bytes);
  fill?.(buf);
  writeFileSync(file, buf);
  return { dir, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Deterministic bytes of a 512-byte sector in generation `gen` (never all zero). */
export function sectorPattern(sector: number, gen: number, out: Uint8Array, off = 0): void {
  let x = (Math.imul(sector + 1, 0x9e3779b1) ^ Math.imul(gen + 7, 0x85ebca77)) >>> 0;
  for (let i = 0; i < 512; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[off + i] = x & 0xff;
    out[off + i + 1] = (x >>> 8) & 0xff;
    out[off + i + 2] = (x >>> 16) & 0xff;
    out[off + i + 3] = (x >>> 24) | 1;
  }
}

export function patternBytes(sector: number, bytes: number, gen: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let s = 0; s * 512 < bytes; s++) sectorPattern(sector + s, gen, out, s * 512);
  return out;
}

export type RingKind = 'split' | 'packed';

/** Guest memory with a bump allocator. */
export class TestGuest {
  readonly sab: SharedArrayBuffer;
  readonly mem: GuestMemory;
  readonly gpa = 0x10000;
  private next: number;

  constructor(bytes: number) {
    this.sab = new SharedArrayBuffer(bytes);
    this.mem = new GuestMemory([{ gpa: this.gpa, size: bytes, sab: this.sab, sabOffset: 0 }]);
    this.next = this.gpa;
  }

  private tokens = 0;
  /** Request tokens, unique across the guest's queues. */
  nextToken(): number {
    return this.tokens++;
  }
  /** Allocation position, to rewind() to once the requests allocated after it are done. */
  checkpoint(): number {
    return this.next;
  }
  rewind(at: number): void {
    this.next = at;
  }

  alloc(bytes: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    this.next = at + bytes;
    if (this.next > this.gpa + this.sab.byteLength) throw new RangeError('test guest memory exhausted');
    return at;
  }

  u8(gpa: number, len: number): Uint8Array {
    return new Uint8Array(this.sab, gpa - this.gpa, len);
  }

  dv(gpa: number, len: number): DataView {
    return new DataView(this.sab, gpa - this.gpa, len);
  }

  /** Turns dirty logging on with a fresh bitmap (one bit per 4 KiB page from GPA 0). */
  enableDirtyLog(): DirtyLog {
    const pages = Math.ceil((this.gpa + this.sab.byteLength) / 4096);
    const bytes = Math.ceil(pages / 8);
    const log = new DirtyLog(new SharedArrayBuffer(Math.ceil(bytes / 8) * 8), 0, bytes);
    this.mem.setDirtyLog(log);
    return log;
  }
}

/** One descriptor of a raw request. */
export interface RawBuf {
  len: number;
  writable: boolean;
  /** Bytes to copy in (readable buffers). */
  data?: Uint8Array;
}

/** A completed request as the guest sees it. */
export interface Done {
  token: number;
  len: number;
  /** The last byte of the last writable buffer (the status), -1 when none. */
  status: number;
  /** The writable buffers, concatenated (copied). */
  written: Uint8Array;
}

/** Where a ring lives in guest memory. */
export interface RingPlace {
  kind: RingKind;
  size: number;
  descGpa: number;
  driverGpa: number;
  deviceGpa: number;
  poolGpa: number;
  poolEntries: number;
  eventIdx: boolean;
}

/** The guest's side of one queue: a driver ring and blk request building. */
export class GuestQueue {
  readonly drv: DriverRing<number>;
  readonly place: RingPlace;
  readonly outstanding = new Map<number, { head: number; bufs: { gpa: number; len: number; writable: boolean }[] }>();
  private readonly used = createUsedBuffer<number>();

  constructor(
    readonly guest: TestGuest,
    opts: { kind: RingKind; size?: number; eventIdx?: boolean; poolEntries?: number },
  ) {
    const size = opts.size ?? 128;
    const kind = opts.kind;
    const poolEntries = opts.poolEntries ?? 8;
    const eventIdx = opts.eventIdx ?? false;
    if (kind === 'split') {
      const descGpa = guest.alloc(splitDescBytes(size), 4096);
      const driverGpa = guest.alloc(splitAvailBytes(size), 64);
      const deviceGpa = guest.alloc(splitUsedBytes(size), 4096);
      const poolGpa = guest.alloc(indirectPoolBytes(size, poolEntries), 16);
      this.place = { kind, size, descGpa, driverGpa, deviceGpa, poolGpa, poolEntries, eventIdx };
      this.drv = new SplitDriverRing<number>(
        guest.mem,
        { size, descGpa, availGpa: driverGpa, usedGpa: deviceGpa, eventIdx },
        { initialize: true, indirectPool: { gpa: poolGpa, maxEntries: poolEntries } },
      );
    } else {
      const descGpa = guest.alloc(packedDescBytes(size), 4096);
      const driverGpa = guest.alloc(PACKED_EVENT_BYTES, 64);
      const deviceGpa = guest.alloc(PACKED_EVENT_BYTES, 64);
      const poolGpa = guest.alloc(indirectPoolBytes(size, poolEntries), 16);
      this.place = { kind, size, descGpa, driverGpa, deviceGpa, poolGpa, poolEntries, eventIdx };
      this.drv = new PackedDriverRing<number>(
        guest.mem,
        { size, descGpa, driverEventGpa: driverGpa, deviceEventGpa: deviceGpa, eventIdx },
        { initialize: true, indirectPool: { gpa: poolGpa, maxEntries: poolEntries } },
      );
    }
  }

  /** A device-side ring over the same memory (what the runtime builds at ring start). */
  deviceRing(lastAvailIdx?: number): DeviceRing {
    const p = this.place;
    if (p.kind === 'split') {
      return new SplitDeviceRing(
        this.guest.mem,
        { size: p.size, descGpa: p.descGpa, availGpa: p.driverGpa, usedGpa: p.deviceGpa, eventIdx: p.eventIdx },
        { lastAvailIdx: lastAvailIdx ?? 0 },
      );
    }
    return new PackedDeviceRing(this.guest.mem, {
      size: p.size,
      descGpa: p.descGpa,
      driverEventGpa: p.driverGpa,
      deviceEventGpa: p.deviceGpa,
      eventIdx: p.eventIdx,
    });
  }

  /** Adds a chain of raw buffers (allocated fresh in guest memory); returns the token, or -1 when the ring is full. */
  addRaw(bufs: RawBuf[], indirect = false): number {
    if (this.drv.numFree < (indirect ? 1 : bufs.length)) return -1;
    const addrs: number[] = [];
    const lens: number[] = [];
    const placed: { gpa: number; len: number; writable: boolean }[] = [];
    for (const b of bufs) {
      const gpa = this.guest.alloc(Math.max(b.len, 1), 16);
      if (b.data !== undefined) this.guest.u8(gpa, b.data.length).set(b.data);
      else if (b.writable && b.len > 0) this.guest.u8(gpa, b.len).fill(0xee);
      addrs.push(gpa);
      lens.push(b.len);
      placed.push({ gpa, len: b.len, writable: b.writable });
    }
    const out = bufs.filter((b) => !b.writable).length;
    const token = this.guest.nextToken();
    const id = this.drv.add(addrs, lens, out, bufs.length - out, token, indirect);
    if (id < 0) return -1;
    this.outstanding.set(token, { head: id, bufs: placed });
    return token;
  }

  /** A blk request: header {type, sector}, then `data` readable bytes or `inLen` writable bytes split in `segs` buffers, then a status byte. */
  addBlk(
    type: number,
    sector: number,
    opts: { data?: Uint8Array; inLen?: number; segs?: number; indirect?: boolean; statusLen?: number } = {},
  ): number {
    const hdr = new Uint8Array(BLK_REQ_HDR_SIZE);
    const dv = new DataView(hdr.buffer);
    dv.setUint32(0, type, true);
    dv.setUint32(8, sector >>> 0, true);
    dv.setUint32(12, Math.floor(sector / 2 ** 32), true);
    const bufs: RawBuf[] = [{ len: BLK_REQ_HDR_SIZE, writable: false, data: hdr }];
    const segs = opts.segs ?? 1;
    if (opts.data !== undefined && opts.data.length > 0) {
      for (const [off, len] of split(opts.data.length, segs)) bufs.push({ len, writable: false, data: opts.data.subarray(off, off + len) });
    }
    if (opts.inLen !== undefined && opts.inLen > 0) {
      for (const [, len] of split(opts.inLen, segs)) bufs.push({ len, writable: true });
    }
    const statusLen = opts.statusLen ?? 1;
    if (statusLen > 0) bufs.push({ len: statusLen, writable: true });
    return this.addRaw(bufs, opts.indirect ?? false);
  }

  publish(): void {
    this.drv.publish();
  }

  /** The guest's used->idx (split rings). */
  usedIdx(): number {
    return this.guest.dv(this.place.deviceGpa, 4).getUint16(2, true);
  }

  /** Tokens in the order the device returned them (filled by harvest). */
  readonly order: number[] = [];

  /** Takes every used buffer. Throws (virtio RingError) on an id completed twice. */
  harvest(into: Map<number, Done>): number {
    let n = 0;
    while (this.drv.getUsed(this.used)) {
      const token = this.used.token!;
      const o = this.outstanding.get(token);
      if (o === undefined) throw new Error(`token ${token} completed but not outstanding`);
      if (into.has(token)) throw new Error(`token ${token} completed twice`);
      this.outstanding.delete(token);
      const w = o.bufs.filter((b) => b.writable);
      const total = w.reduce((s, b) => s + b.len, 0);
      const written = new Uint8Array(total);
      let off = 0;
      for (const b of w) {
        written.set(this.guest.u8(b.gpa, b.len), off);
        off += b.len;
      }
      into.set(token, { token, len: this.used.len, status: total > 0 ? written[total - 1]! : -1, written });
      this.order.push(token);
      n++;
    }
    return n;
  }
}

function split(total: number, segs: number): [number, number][] {
  const out: [number, number][] = [];
  const base = Math.floor(total / segs / 512) * 512 || 512;
  let off = 0;
  for (let i = 0; i < segs && off < total; i++) {
    const len = i === segs - 1 ? total - off : Math.min(base, total - off);
    out.push([off, len]);
    off += len;
  }
  return out;
}

/** The runtime's view of one ring. */
export class HarnessRing implements QueueRing {
  readonly slot: number;
  kind: RingKind | null = null;
  size = 0;
  mode: 'burst' | 'manual' = 'burst';
  device: DeviceRing | null = null;
  /** false after a simulated crash: the ring ignores everything. */
  alive = true;
  dirty = false;
  dropped = 0;
  pops = 0;
  readonly chains: Chain[] = [];
  private readonly scratch = new Chain();

  constructor(
    readonly harness: Harness,
    readonly index: number,
  ) {
    this.slot = index;
    for (let i = 0; i < 32; i++) this.chains.push(new Chain());
  }

  get active(): boolean {
    return this.alive && this.device !== null;
  }
  pop(): Chain | null {
    return this.popInto(this.scratch) ? this.scratch : null;
  }
  popInto(chain: Chain): boolean {
    if (!this.active) return false;
    const ok = this.device!.pop(chain);
    if (ok) this.pops++;
    return ok;
  }
  available(): number {
    if (!this.active) return 0;
    const d = this.device as DeviceRing & { available?: () => number };
    return d.available !== undefined ? d.available() : d.hasWork() ? 1 : 0;
  }
  complete(chain: Chain, len: number): void {
    this.completeId(chain.head, len);
  }
  completeId(head: number, len: number): void {
    if (!this.alive || this.device === null) {
      this.dropped++;
      return;
    }
    this.device.push(head, len);
    if (!this.dirty) {
      this.dirty = true;
      if (!this.harness.inModule && !this.harness.holdFlush) queueMicrotask(() => this.flush());
    }
  }
  flush(): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (this.alive && this.device !== null) this.device.flush();
  }
}

/** The runtime stand-in: one module instance serving some rings. */
export class Harness implements QueueContext {
  readonly deviceId = 'test';
  readonly workerIndex = 0;
  readonly rings: HarnessRing[];
  inModule = false;
  /** Do not publish staged completions (to simulate a crash between staging and publishing). */
  holdFlush = false;
  mod: QueueModule | null = null;
  readonly warnings: string[] = [];
  readonly log = {
    debug: () => undefined,
    info: () => undefined,
    warn: (m: string) => void this.warnings.push(m),
    error: (m: string) => void this.warnings.push(m),
  };
  eventLoop = false;

  constructor(
    readonly guest: TestGuest,
    readonly options: Readonly<Record<string, string>>,
    ringCount: number,
    readonly features = 0n,
  ) {
    this.rings = [];
    for (let i = 0; i < ringCount; i++) this.rings.push(new HarnessRing(this, i));
  }

  ring(i: number): HarnessRing | undefined {
    return this.rings[i];
  }
  get memory(): GuestMemory {
    return this.guest.mem;
  }
  hasFeature(bit: number): boolean {
    return ((this.features >> BigInt(bit)) & 1n) === 1n;
  }
  get logging(): boolean {
    return this.guest.mem.log !== null;
  }
  logWrite(gpa: number, len: number): void {
    this.guest.mem.logWrite(gpa, len);
  }
  newChain(capacity?: number): Chain {
    return new Chain(capacity);
  }
  createPool(): never {
    throw new Error('no pools in the harness');
  }
  setEventLoop(on: boolean): void {
    this.eventLoop = on;
  }
  wake(): void {}

  async load(factory: (ctx: QueueContext) => QueueModule | Promise<QueueModule>): Promise<QueueModule> {
    this.mod = await factory(this);
    return this.mod;
  }

  private call(fn: () => void): void {
    this.inModule = true;
    try {
      fn();
    } finally {
      this.inModule = false;
    }
  }

  /** Starts ring i over `dev` (the runtime's startRing). */
  startRing(i: number, dev: DeviceRing): void {
    const r = this.rings[i]!;
    r.device = dev;
    r.kind = dev.kind;
    r.size = dev.size;
    r.mode = 'burst';
    dev.disableNotifications();
    this.call(() => this.mod!.ringStarted?.(r));
  }

  /** Stops ring i (the runtime's stopRing: flush, forget the ring, tell the module). */
  stopRing(i: number): void {
    const r = this.rings[i]!;
    r.flush();
    r.device = null;
    this.call(() => this.mod!.ringStopped?.(r));
  }

  /** One pass of the worker loop: a burst per ring, then poll; publishes unless holdFlush. Returns chains handled. */
  step(burstSize = 32): number {
    let work = 0;
    const mod = this.mod!;
    for (const r of this.rings) {
      if (!r.active || r.mode !== 'burst' || mod.process === undefined) continue;
      const n = r.device!.popBurst(r.chains, Math.min(burstSize, r.chains.length));
      if (n === 0) continue;
      r.pops += n;
      const burst: Burst = { ring: r, chains: r.chains, count: n };
      this.call(() => mod.process!(burst));
      work += n;
      if (!this.holdFlush) r.flush();
    }
    if (mod.poll !== undefined) {
      let n = 0;
      this.call(() => {
        n = mod.poll!();
      });
      work += n;
      if (!this.holdFlush) for (const r of this.rings) r.flush();
    }
    return work;
  }

  /** Runs passes (yielding to the event loop for async I/O) until `done()` or the timeout. */
  async runUntil(done: () => boolean, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > end) throw new Error('harness: timed out');
      const n = this.step();
      if (n === 0) await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * Simulates SIGKILL: rings stop accepting anything, the module is
   * abandoned (its in-flight async I/O drains, its fd is closed), and the
   * state it leaves in shared memory is that at the crash instant.
   */
  async crash(shared: SharedArrayBuffer[]): Promise<void> {
    const snaps = shared.map((s) => new Uint8Array(s).slice());
    for (const r of this.rings) r.alive = false;
    await this.mod?.close?.();
    shared.forEach((s, i) => new Uint8Array(s).set(snaps[i]!));
  }

  async close(): Promise<void> {
    await this.mod?.close?.();
  }
}

/** Runs passes and harvests until every listed token completed. */
export async function complete(h: Harness, queues: GuestQueue[], into: Map<number, Done>, tokens: Iterable<number>, timeoutMs = 10_000): Promise<void> {
  const want = [...tokens];
  for (const q of queues) q.publish();
  await h.runUntil(() => {
    for (const q of queues) q.harvest(into);
    return want.every((t) => into.has(t));
  }, timeoutMs);
}
