/**
 * The blk personality: a virtio-blk driver over a started FrontendDevice.
 * Every request queue has `depth` request slots in guest memory (header,
 * data area, status byte); requests are chains header(out) [data] status(in),
 * several in flight per queue, completed from the used ring when the call
 * eventfd fires.
 */
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  createUsedBuffer,
  type DriverRing,
  type UsedBuffer,
} from '@vhost-ts/virtio';
import { native } from '../native.js';
import type { FrontendDevice } from '../device.js';
import {
  BLK_GET_ID_SIZE,
  BLK_HEADER_SIZE,
  BLK_STATUS_UNSET,
  blkRequestType,
  decodeBlkConfig,
  encodeBlkHeader,
  encodeBlkSegment,
  planBlkRequest,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  type BlkConfig,
  type BlkRequestSpec,
} from './request.js';

/** Feature bits the blk personality takes when offered. */
export const BLK_DRIVER_FEATURES =
  (1n << BigInt(VIRTIO_BLK_F_SIZE_MAX)) |
  (1n << BigInt(VIRTIO_BLK_F_SEG_MAX)) |
  (1n << BigInt(VIRTIO_BLK_F_RO)) |
  (1n << BigInt(VIRTIO_BLK_F_BLK_SIZE)) |
  (1n << BigInt(VIRTIO_BLK_F_FLUSH)) |
  (1n << BigInt(VIRTIO_BLK_F_TOPOLOGY)) |
  (1n << BigInt(VIRTIO_BLK_F_MQ)) |
  (1n << BigInt(VIRTIO_BLK_F_DISCARD)) |
  (1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES));

/** Bytes of blk config space we read (through write_zeroes_may_unmap and its padding). */
export const BLK_CONFIG_SIZE = 60;

export class BlkTimeoutError extends Error {
  override readonly name = 'BlkTimeoutError';
}

/** What a completed request reports. */
export interface BlkResult {
  /** The status byte (0 OK, 1 IOERR, 2 UNSUPP; 0xff = the device never wrote it). */
  status: number;
  /** The used length the device reported. */
  usedLen: number;
  /** What `inspect` returned (reads and get-id), else undefined. */
  inspected?: unknown;
}

/** In-place access to a request's data area (no copies): `u8`/`dv` are region views, the data is [off, off + len). */
export type DataAccess = (u8: Uint8Array, dv: DataView, off: number, len: number) => unknown;

export interface BlkSubmitOptions extends BlkRequestSpec {
  /** Write: fill the data area in place (or pass `data`). */
  fill?: DataAccess;
  /** Write: bytes to copy into the data area. */
  data?: Uint8Array;
  /** Read / get-id: look at the data in place before the slot is reused; its result is `inspected`. */
  inspect?: DataAccess;
  /** Queue (default: round robin). */
  queue?: number;
  /** Use an indirect table for this request (rings must have been set up with indirect pools). */
  indirect?: boolean;
  /** Completion timeout (ms, default the driver's). */
  timeoutMs?: number;
}

interface Slot {
  hdrOff: number;
  hdrGpa: number;
  dataOff: number;
  dataGpa: number;
  statusOff: number;
  statusGpa: number;
  busy: boolean;
  /** Timed out: never reused (the device may still write it). */
  abandoned: boolean;
  resolve: ((r: BlkResult) => void) | null;
  reject: ((e: Error) => void) | null;
  inspect: DataAccess | undefined;
  dataLen: number;
  timer: NodeJS.Timeout | undefined;
}

class BlkQueue {
  readonly index: number;
  readonly ring: DriverRing<number>;
  readonly kickFd: number;
  readonly slots: Slot[] = [];
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly waiters: (() => void)[] = [];
  inFlight = 0;
  constructor(index: number, ring: DriverRing<number>, kickFd: number, u8: Uint8Array, dv: DataView) {
    this.index = index;
    this.ring = ring;
    this.kickFd = kickFd;
    this.u8 = u8;
    this.dv = dv;
  }
}

export interface BlkDriverOptions {
  /** Requests in flight per queue (default 16). */
  depth?: number;
  /** Largest read/write in bytes (default 64 KiB). */
  maxRequestBytes?: number;
  /** Default completion timeout (ms, default 10000). */
  timeoutMs?: number;
  /** Put every request in an indirect table (default: when the rings were given indirect pools). */
  indirect?: boolean;
}

export class BlkDriver {
  readonly device: FrontendDevice;
  readonly config: BlkConfig;
  readonly depth: number;
  readonly maxRequestBytes: number;
  readonly timeoutMs: number;
  private readonly queues: BlkQueue[] = [];
  private readonly used: UsedBuffer<number> = createUsedBuffer<number>();
  private readonly addrs = new Float64Array(3);
  private readonly lens = new Float64Array(3);
  private next = 0;
  private readonly indirect: boolean;
  /** Requests completed, by outcome. */
  completed = 0;
  failed = 0;

  constructor(device: FrontendDevice, options: BlkDriverOptions = {}) {
    this.device = device;
    this.config = decodeBlkConfig(device.config);
    this.depth = options.depth ?? 16;
    this.maxRequestBytes = options.maxRequestBytes ?? 65536;
    this.timeoutMs = options.timeoutMs ?? 10000;
    this.indirect = options.indirect ?? device.vrings.every((v) => v.indirect);
    const needSlots = this.depth * 3;
    for (const v of device.vrings) {
      if (!v.indirect && needSlots > v.size) throw new RangeError(`depth ${this.depth} needs ${needSlots} descriptors; queue size is ${v.size}`);
      if (this.depth > v.size) throw new RangeError(`depth ${this.depth} exceeds queue size ${v.size}`);
      const stride = BLK_HEADER_SIZE + 16; // header, then the status byte in its own 16 bytes
      const meta = device.memory.allocator.alloc(this.depth * stride, 64);
      const data = device.memory.allocator.alloc(this.depth * this.maxRequestBytes, 4096);
      const m = device.memory.locate(meta.gpa, meta.size);
      const d = device.memory.locate(data.gpa, data.size);
      if (m.region !== d.region) {
        // Keep one region view per queue: allocate again if the allocator moved regions (rare).
        throw new RangeError('blk request areas of a queue landed in different regions; use a larger or single-region memory');
      }
      const q = new BlkQueue(v.index, v.ring, v.kickFd, m.region.u8, m.region.dv);
      for (let s = 0; s < this.depth; s++) {
        q.slots.push({
          hdrOff: m.offset + s * stride,
          hdrGpa: meta.gpa + s * stride,
          statusOff: m.offset + s * stride + BLK_HEADER_SIZE,
          statusGpa: meta.gpa + s * stride + BLK_HEADER_SIZE,
          dataOff: d.offset + s * this.maxRequestBytes,
          dataGpa: data.gpa + s * this.maxRequestBytes,
          busy: false,
          abandoned: false,
          resolve: null,
          reject: null,
          inspect: undefined,
          dataLen: 0,
          timer: undefined,
        });
      }
      this.queues.push(q);
      v.ring.enableCallbacks();
      device.watchCalls(v.index, () => this.complete(q));
    }
  }

  get readOnly(): boolean {
    return ((this.device.features >> BigInt(VIRTIO_BLK_F_RO)) & 1n) !== 0n;
  }
  has(featureBit: number): boolean {
    return ((this.device.features >> BigInt(featureBit)) & 1n) !== 0n;
  }
  get queueCount(): number {
    return this.queues.length;
  }
  /** Requests in flight over all queues. */
  get inFlight(): number {
    let n = 0;
    for (const q of this.queues) n += q.inFlight;
    return n;
  }

  /** Takes every used entry of a queue and settles its requests. */
  private complete(q: BlkQueue): void {
    const used = this.used;
    for (;;) {
      while (q.ring.getUsed(used)) {
        const slot = q.slots[used.token!]!;
        q.inFlight--;
        if (slot.timer) clearTimeout(slot.timer);
        const resolve = slot.resolve;
        slot.resolve = null;
        slot.reject = null;
        if (slot.abandoned) {
          // Completed after its timeout: the slot can be used again now.
          slot.abandoned = false;
        }
        let inspected: unknown;
        if (resolve !== null) {
          const status = q.u8[slot.statusOff]!;
          if (slot.inspect && status === 0) inspected = slot.inspect(q.u8, q.dv, slot.dataOff, slot.dataLen);
          this.completed++;
          if (status !== 0) this.failed++;
          const r: BlkResult = { status, usedLen: used.len };
          if (inspected !== undefined) r.inspected = inspected;
          slot.busy = false;
          resolve(r);
        } else {
          slot.busy = false;
        }
        const w = q.waiters.shift();
        if (w) w();
      }
      // Re-arm notifications and re-check (a completion may have raced the re-arm).
      if (!q.ring.enableCallbacks()) break;
    }
  }

  private async takeSlot(q: BlkQueue): Promise<number> {
    for (;;) {
      for (let i = 0; i < q.slots.length; i++) {
        const s = q.slots[i]!;
        if (!s.busy && !s.abandoned) {
          s.busy = true; // claimed before any await: concurrent submits never share a slot
          return i;
        }
      }
      await new Promise<void>((r) => q.waiters.push(r));
    }
  }

  /** Submits one request and resolves when the device completed it. */
  async submit(req: BlkSubmitOptions): Promise<BlkResult> {
    const plan = planBlkRequest(req);
    const qi = req.queue ?? this.next++ % this.queues.length;
    const q = this.queues[qi];
    if (q === undefined) throw new RangeError(`no request queue ${qi}`);
    const dataSeg = plan.find((p) => p.role === 'data');
    if (dataSeg && dataSeg.len > this.maxRequestBytes) throw new RangeError(`request of ${dataSeg.len} bytes > ${this.maxRequestBytes}`);
    const si = await this.takeSlot(q);
    const slot = q.slots[si]!;
    const dv = q.dv;
    encodeBlkHeader(dv, slot.hdrOff, blkRequestType(req.op), req.sector ?? 0);
    q.u8[slot.statusOff] = BLK_STATUS_UNSET;
    slot.dataLen = dataSeg?.len ?? 0;
    slot.inspect = req.inspect;
    if (req.op === 'write') {
      if (req.data) {
        if (req.data.byteLength !== slot.dataLen) throw new RangeError(`write data is ${req.data.byteLength} bytes, request is ${slot.dataLen}`);
        q.u8.set(req.data, slot.dataOff);
      } else if (req.fill) {
        req.fill(q.u8, dv, slot.dataOff, slot.dataLen);
      }
    } else if (req.op === 'discard' || req.op === 'write-zeroes') {
      const flags = req.op === 'write-zeroes' && req.unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
      encodeBlkSegment(dv, slot.dataOff, req.sector ?? 0, req.sectors ?? 1, flags);
    } else if (req.op === 'get-id') {
      q.u8.fill(0, slot.dataOff, slot.dataOff + BLK_GET_ID_SIZE);
    }
    let n = 0;
    let outCount = 0;
    for (const seg of plan) {
      this.addrs[n] = seg.role === 'header' ? slot.hdrGpa : seg.role === 'status' ? slot.statusGpa : slot.dataGpa;
      this.lens[n] = seg.len;
      if (!seg.writable) outCount++;
      n++;
    }
    const result = new Promise<BlkResult>((resolve, reject) => {
      slot.resolve = resolve;
      slot.reject = reject;
    });
    const timeoutMs = req.timeoutMs ?? this.timeoutMs;
    slot.timer = setTimeout(() => {
      const reject = slot.reject;
      slot.resolve = null;
      slot.reject = null;
      slot.abandoned = true;
      reject?.(new BlkTimeoutError(`blk ${req.op} on queue ${qi} not completed within ${timeoutMs} ms`));
    }, timeoutMs);
    if (q.ring.add(this.addrs, this.lens, outCount, n - outCount, si, req.indirect ?? this.indirect) < 0) {
      clearTimeout(slot.timer);
      slot.busy = false;
      throw new Error(`queue ${qi} has no free descriptors`);
    }
    q.inFlight++;
    if (q.ring.needsKick()) native.eventfdWrite(q.kickFd, 1);
    return result;
  }

  /** Waits until nothing is in flight (or timeout). */
  async drain(timeoutMs = this.timeoutMs): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.inFlight > 0) {
      if (Date.now() > end) throw new BlkTimeoutError(`${this.inFlight} blk requests still in flight after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Rejects every pending request (used before the device is closed). */
  abortAll(reason = 'blk driver closed'): void {
    for (const q of this.queues) {
      for (const s of q.slots) {
        if (s.timer) clearTimeout(s.timer);
        const reject = s.reject;
        s.resolve = null;
        s.reject = null;
        reject?.(new Error(reason));
      }
    }
  }
}
