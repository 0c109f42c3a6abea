/**
 * The virtio-blk request engine of one queue worker: parses and validates
 * each chain, performs the file I/O straight between the backing file and
 * guest memory (no bounce buffer), writes the status byte last and completes
 * the chain with used length = bytes written to the guest (data + status).
 * Optional inflight tracking (INFLIGHT_SHMFD) per split vring.
 *
 * Two I/O modes:
 * - 'sync' (default): `fs.readSync`/`writeSync` on the queue worker thread,
 *   inside the module call. Nothing allocated per request; the ring is never
 *   blocked by more than the request at hand, and each queue has its own thread.
 * - 'async': libuv threadpool I/O (`fs.read`/`write` with callbacks) with the
 *   worker in event-loop mode; many requests per queue in flight at once.
 * See bench/src/blk-io.ts for the measurement behind the default.
 *
 * Error handling: a malformed request gets IOERR or UNSUPP in its status byte
 * (or a used length of 0 when it has no device-writable byte); an I/O error
 * gets IOERR. The device keeps running either way.
 */
import { fdatasync, fdatasyncSync, read, readSync, write, writeSync } from 'node:fs';
import {
  BLK_DWZ_FLAGS,
  BLK_DWZ_NUM_SECTORS,
  BLK_DWZ_SECTOR,
  BLK_DWZ_SIZE as BLK_DWZ_SEGMENT_SIZE,
  BLK_REQ_HDR_SIZE as BLK_HEADER_SIZE,
  BLK_REQ_SECTOR as BLK_HDR_SECTOR,
  BLK_REQ_TYPE as BLK_HDR_TYPE,
  BLK_SECTOR_SIZE as SECTOR_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  type Chain,
  type GuestMemory,
} from '@vhost-ts/virtio';
import type { QueueRing } from '@vhost-ts/workers/module-api';
import { SplitInflightQueue, type InflightAreaSpec } from './inflight.js';

export type IoMode = 'sync' | 'async';

/** What the engine needs to serve requests. */
export interface BlkEngineOptions {
  /** Backing file descriptor (opened by the worker: read-only or read-write). */
  fd: number;
  capacityBytes: number;
  blockSize: number;
  readOnly: boolean;
  /** false: write-through (every write and write-zeroes is followed by fdatasync). */
  writeback: boolean;
  /** GET_ID answer (at most 20 bytes, ASCII). */
  serial: string;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  io: IoMode;
  /**
   * Fault injection for tests (async mode only): hold every completion this
   * many ms after its I/O is done, so requests are reliably in flight when
   * the back-end is killed. 0 (default) in production.
   */
  completionDelayMs?: number;
  /** Warnings (not per request). */
  warn?: (message: string) => void;
}

// What a request needs after validation.
const ACT_NO_STATUS = 0; // no device-writable byte: complete with len 0
const ACT_DONE = 1; // status decided, nothing (more) to do
const ACT_READ = 2;
const ACT_WRITE = 3;
const ACT_FLUSH = 4;
const ACT_ZERO = 5;

/** Largest write of zeros issued at once (write-zeroes is split into chunks of this). */
const ZERO_CHUNK = 1 << 20;

/** Per-vring counters (cumulative). */
export interface RingCounters {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  others: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests answered IOERR. */
  ioErrors: number;
  /** Requests answered UNSUPP. */
  unsupported: number;
  /** Requests completed without a status byte (malformed). */
  malformed: number;
  /** Requests in flight in the engine now. */
  inflight: number;
  /** Most requests in flight at once. */
  maxInflight: number;
  /** Requests resubmitted from the inflight area. */
  resubmitted: number;
  /** Completions dropped because their ring stopped meanwhile (still tracked in the inflight area). */
  dropped: number;
}

// Slots of RingState.c: the cumulative RingCounters.
const C_REQUESTS = 0;
const C_READS = 1;
const C_WRITES = 2;
const C_FLUSHES = 3;
const C_OTHERS = 4;
const C_BYTES_READ = 5;
const C_BYTES_WRITTEN = 6;
const C_IO_ERRORS = 7;
const C_UNSUPPORTED = 8;
const C_MALFORMED = 9;
const C_RESUBMITTED = 10;
const C_DROPPED = 11;
const C_COUNT = 12;

/** One request being served. Preallocated per ring slot (async) and reused. */
class BlkRequest {
  /** Own chain copy (async) or scratch chain (resubmissions). */
  readonly own: Chain;
  chain: Chain;
  rs: RingState | null = null;
  gen = 0;
  head = 0;
  type = 0;
  status = 0;
  /** File offset of the data. */
  pos = 0;
  /** Data bytes to move. */
  dataLen = 0;
  /** Bytes written into guest memory, status excluded. */
  inLen = 0;
  /** Segment holding the status byte (its last byte), -1 when none. */
  statusSeg = -1;
  /** Async: operations outstanding, bytes they moved, an error seen, write-through sync pending. */
  pending = 0;
  moved = 0;
  failed = false;
  syncing = false;
  readonly cb: (err: NodeJS.ErrnoException | null, n: number) => void;
  readonly syncCb: (err: NodeJS.ErrnoException | null) => void;

  constructor(engine: BlkEngine, chain: Chain) {
    this.own = chain;
    this.chain = chain;
    this.cb = (err, n) => engine.opDone(this, err, n);
    this.syncCb = (err) => engine.syncDone(this, err);
  }
}

/** Engine state of one vring. */
class RingState {
  readonly ring: QueueRing;
  gen = 0;
  inflight: SplitInflightQueue | null = null;
  resubmit: number[] = [];
  resubmitPos = 0;
  /** Started while the engine waits for the inflight area: not served yet. */
  held = false;
  /** Free request objects (async mode). */
  readonly free: BlkRequest[] = [];
  allocated = 0;
  /**
   * The cumulative counters of {@link RingCounters}, slots C_*. A Float64Array, not number
   * fields: the byte counters pass 2^30 after a GiB, and a field that outgrows V8's small
   * integers changes representation mid-run, deoptimising every function that touched it.
   */
  readonly c = new Float64Array(C_COUNT);
  /** Requests in flight now, and the most at once (bounded by the ring size: small integers). */
  nInflight = 0;
  maxInflight = 0;
  constructor(ring: QueueRing) {
    this.ring = ring;
  }
}

/**
 * Copies a chain's description (Chain.copyInto without its per-call subarray
 * views: nothing allocated); a chain longer than `dst` holds (rare) goes
 * through copyInto, which grows `dst` for good.
 */
function copyChain(src: Chain, dst: Chain): void {
  if (dst.capacity < src.count) {
    src.copyInto(dst);
    return;
  }
  dst.reset(src.mem);
  dst.head = src.head;
  dst.descCount = src.descCount;
  dst.indirect = src.indirect;
  const n = src.count;
  for (let i = 0; i < n; i++) {
    dst.segRegion[i] = src.segRegion[i]!;
    dst.segOffset[i] = src.segOffset[i]!;
    dst.segGpa[i] = src.segGpa[i]!;
    dst.segLen[i] = src.segLen[i]!;
    dst.segWritable[i] = src.segWritable[i]!;
  }
  dst.count = n;
  dst.readableCount = src.readableCount;
  dst.writableCount = src.writableCount;
  dst.readableBytes = src.readableBytes;
  dst.writableBytes = src.writableBytes;
}

/** Published used->idx of a split device ring: staged entries excluded. */
function publishedUsedIdx(ring: QueueRing): number {
  const dev = ring.device as (QueueRing['device'] & { pendingUsed?: number }) | null;
  if (dev === null) return 0;
  return (dev.lastUsedIdx - (dev.pendingUsed ?? 0)) & 0xffff;
}

export class BlkEngine {
  readonly opts: BlkEngineOptions;
  private readonly rings = new Map<QueueRing, RingState>();
  private readonly newChain: () => Chain;
  private readonly hdr = new Uint8Array(BLK_HEADER_SIZE);
  private readonly hdrDv = new DataView(this.hdr.buffer);
  private readonly seg = new Uint8Array(BLK_DWZ_SEGMENT_SIZE);
  private readonly segDv = new DataView(this.seg.buffer);
  private readonly zeros = new Uint8Array(ZERO_CHUNK);
  private readonly serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  /** Sync mode: the one request object, reused for every chain. */
  private readonly syncReq: BlkRequest;
  private inflightArea: InflightAreaSpec | null = null;
  /** Rings wait for setInflightArea (see holdForInflight). */
  private holding = false;
  private capSectors: number;
  private readonly bsSectors: number;
  // Write-zeroes segments of the request being validated.
  private readonly zPos: Float64Array;
  private readonly zLen: Float64Array;
  private zCount = 0;

  constructor(opts: BlkEngineOptions, newChain: () => Chain) {
    this.opts = { ...opts };
    if ((opts.completionDelayMs ?? 0) > 0 && opts.io !== 'async') throw new RangeError('completionDelayMs needs io=async');
    this.newChain = newChain;
    this.syncReq = new BlkRequest(this, newChain());
    const id = new TextEncoder().encode(opts.serial);
    this.serial.set(id.subarray(0, VIRTIO_BLK_ID_BYTES));
    this.capSectors = Math.floor(opts.capacityBytes / SECTOR_SIZE);
    this.bsSectors = opts.blockSize / SECTOR_SIZE;
    const maxSeg = Math.max(1, opts.maxDiscardSeg, opts.maxWriteZeroesSeg);
    this.zPos = new Float64Array(maxSeg);
    this.zLen = new Float64Array(maxSeg);
  }

  get async(): boolean {
    return this.opts.io === 'async';
  }

  /** The device grew (or shrank): requests are checked against the new capacity from now on. */
  setCapacity(bytes: number): void {
    this.opts.capacityBytes = bytes;
    this.capSectors = Math.floor(bytes / SECTOR_SIZE);
  }

  setWriteback(on: boolean): void {
    this.opts.writeback = on;
  }

  /**
   * The inflight area of the device (null: none). Rings started from now on
   * are tracked; rings held by {@link holdForInflight} are released (recovered
   * first). Give it before the rings start, or hold them.
   */
  setInflightArea(area: InflightAreaSpec | null): void {
    this.inflightArea = area;
    if (!this.holding) return;
    this.holding = false;
    for (const rs of this.rings.values()) {
      if (!rs.held) continue;
      rs.held = false;
      rs.ring.mode = 'burst';
      if (rs.ring.device !== null) this.track(rs);
    }
  }

  /**
   * Holds every ring that starts (no pops: mode 'manual') until
   * {@link setInflightArea} says which inflight area applies, for a data plane
   * that can only hand the area over after the rings started.
   */
  holdForInflight(): void {
    this.holding = true;
  }

  private state(ring: QueueRing): RingState {
    let rs = this.rings.get(ring);
    if (rs === undefined) {
      rs = new RingState(ring);
      this.rings.set(ring, rs);
    }
    return rs;
  }

  // -------------------------------------------------------------------------
  // Ring lifecycle.

  /** A vring (re)started: inflight recovery, resubmission list, fresh generation. */
  ringStarted(ring: QueueRing): void {
    const rs = this.state(ring);
    rs.gen++;
    rs.inflight = null;
    rs.resubmit = [];
    rs.resubmitPos = 0;
    if (this.holding) {
      rs.held = true;
      ring.mode = 'manual';
      return;
    }
    ring.mode = 'burst';
    this.track(rs);
  }

  /** Starts inflight tracking of a started ring (recovering what a previous back-end left in flight). */
  private track(rs: RingState): void {
    const ring = rs.ring;
    const area = this.inflightArea;
    const dev = ring.device;
    if (area === null || dev === null) return;
    if (ring.kind !== 'split') {
      this.opts.warn?.(`vring ${ring.index}: inflight tracking covers split rings only; this packed ring is not tracked`);
      return;
    }
    const q = SplitInflightQueue.forVring(area, ring.index, ring.size);
    if (typeof q === 'string') {
      this.opts.warn?.(`vring ${ring.index}: inflight area not usable (${q}); not tracked`);
      return;
    }
    // The guest's used->idx (the device ring's shadow may come from an older SET_VRING_ADDR).
    const sync = (dev as { syncUsedIdx?: () => number }).syncUsedIdx;
    const usedIdx = sync !== undefined ? sync.call(dev) : dev.lastUsedIdx;
    const rec = q.recover(usedIdx);
    rs.inflight = q;
    if (rec.reset !== undefined) this.opts.warn?.(`vring ${ring.index}: inflight area reset (${rec.reset})`);
    if (rec.fresh) return;
    dev.lastAvailIdx = rec.lastAvailIdx;
    if (rec.heads.length > 0) {
      rs.resubmit = rec.heads;
      // The runtime must not pop new chains before the old ones are resubmitted: poll() serves the ring.
      ring.mode = 'manual';
      this.opts.warn?.(
        `vring ${ring.index}: resubmitting ${rec.heads.length} in-flight request(s) from the inflight area (used idx ${usedIdx}, resuming at avail ${rec.lastAvailIdx})`,
      );
    }
  }

  /** A vring stopped: everything staged was published; late completions of this generation are dropped. */
  ringStopped(ring: QueueRing): void {
    const rs = this.rings.get(ring);
    if (rs === undefined) return;
    rs.inflight?.settleAll();
    rs.inflight = null;
    rs.held = false;
    rs.gen++;
    rs.resubmit = [];
    rs.resubmitPos = 0;
    ring.mode = 'burst';
  }

  /** Inflight queue of a vring (tests, stats). */
  inflightOf(ring: QueueRing): SplitInflightQueue | null {
    return this.rings.get(ring)?.inflight ?? null;
  }

  // -------------------------------------------------------------------------
  // The data path.

  /** A burst popped by the runtime. */
  processBurst(ring: QueueRing, chains: readonly Chain[], count: number): void {
    const rs = this.state(ring);
    const q = rs.inflight;
    if (q !== null) q.settle(publishedUsedIdx(ring));
    for (let i = 0; i < count; i++) {
      const chain = chains[i]!;
      if (q !== null) q.markPopped(chain.head);
      this.submit(rs, chain);
    }
  }

  /**
   * Resubmissions after an inflight recovery, in submission order; returns the
   * requests started. A head that no longer describes a valid chain breaks the
   * ring (RingError from describeHead propagates to the runtime, as a bad pop would).
   */
  poll(): number {
    let n = 0;
    for (const rs of this.rings.values()) {
      if (rs.resubmitPos >= rs.resubmit.length) continue;
      const ring = rs.ring;
      const dev = ring.device as (QueueRing['device'] & { describeHead?: (chain: Chain, head: number) => void }) | null;
      if (dev === null || !ring.active || dev.describeHead === undefined) continue;
      const chain = this.syncReq.own;
      while (rs.resubmitPos < rs.resubmit.length) {
        const head = rs.resubmit[rs.resubmitPos]!;
        dev.describeHead(chain, head);
        rs.resubmitPos++;
        rs.c[C_RESUBMITTED]!++;
        // Synchronously, whatever the I/O mode: the runtime did not pop these chains, so its
        // in-flight count (what a stop or pause drains) does not include them; they must not
        // still be running when the ring is stopped or guest memory is swapped.
        this.submit(rs, chain, true);
        n++;
      }
      rs.resubmit = [];
      rs.resubmitPos = 0;
      ring.mode = 'burst';
    }
    return n;
  }

  private acquire(rs: RingState): BlkRequest {
    const r = rs.free.pop();
    if (r !== undefined) return r;
    rs.allocated++;
    return new BlkRequest(this, this.newChain());
  }

  /** Serves one chain (popped or resubmitted). */
  private submit(rs: RingState, chain: Chain, forceSync = false): void {
    const async = !forceSync && this.opts.io === 'async';
    let req: BlkRequest;
    if (async) {
      req = this.acquire(rs);
      copyChain(chain, req.own);
      req.chain = req.own;
    } else {
      req = this.syncReq;
      req.chain = chain;
    }
    req.rs = rs;
    req.gen = rs.gen;
    req.head = chain.head;
    rs.c[C_REQUESTS]!++;
    if (++rs.nInflight > rs.maxInflight) rs.maxInflight = rs.nInflight;
    const act = this.prepare(req);
    if (act === ACT_NO_STATUS || act === ACT_DONE) {
      this.finish(req);
      return;
    }
    if (async) this.startAsync(req, act);
    else {
      this.runSync(req, act);
      this.finish(req);
    }
  }

  /** Validates the request; sets type, status, statusSeg, pos, dataLen. Returns the action. */
  private prepare(req: BlkRequest): number {
    const chain = req.chain;
    const mem = chain.mem!;
    req.status = VIRTIO_BLK_S_OK;
    req.inLen = 0;
    req.dataLen = 0;
    req.pos = 0;
    req.type = -1;
    // The status byte: the last byte of the last device-writable segment.
    let s = chain.count - 1;
    while (s >= 0 && chain.segWritable[s] === 0) s--;
    req.statusSeg = s;
    if (s < 0) return ACT_NO_STATUS;
    // The header: 16 device-readable bytes (a header in a writable buffer is not one).
    if (chain.readableBytes < BLK_HEADER_SIZE) return this.fail(req, VIRTIO_BLK_S_IOERR);
    let type: number;
    let lo: number;
    let hi: number;
    if (chain.segWritable[0] === 0 && chain.segLen[0]! >= BLK_HEADER_SIZE) {
      const dv = mem.regions[chain.segRegion[0]!]!.dv;
      const o = chain.segOffset[0]!;
      type = dv.getUint32(o + BLK_HDR_TYPE, true);
      lo = dv.getUint32(o + BLK_HDR_SECTOR, true);
      hi = dv.getUint32(o + BLK_HDR_SECTOR + 4, true);
    } else {
      chain.read(0, this.hdr, 0, BLK_HEADER_SIZE);
      type = this.hdrDv.getUint32(BLK_HDR_TYPE, true);
      lo = this.hdrDv.getUint32(BLK_HDR_SECTOR, true);
      hi = this.hdrDv.getUint32(BLK_HDR_SECTOR + 4, true);
    }
    req.type = type;
    const writableData = chain.writableBytes - 1;
    switch (type) {
      case VIRTIO_BLK_T_IN:
        return this.checkRange(req, lo, hi, writableData) ? ACT_READ : this.fail(req, VIRTIO_BLK_S_IOERR);
      case VIRTIO_BLK_T_OUT:
        if (this.opts.readOnly) return this.fail(req, VIRTIO_BLK_S_IOERR);
        return this.checkRange(req, lo, hi, chain.readableBytes - BLK_HEADER_SIZE) ? ACT_WRITE : this.fail(req, VIRTIO_BLK_S_IOERR);
      case VIRTIO_BLK_T_FLUSH:
        return ACT_FLUSH;
      case VIRTIO_BLK_T_GET_ID: {
        const n = writableData < VIRTIO_BLK_ID_BYTES ? writableData : VIRTIO_BLK_ID_BYTES;
        req.inLen = chain.write(0, this.serial, 0, n);
        return ACT_DONE;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.prepareDwz(req, type === VIRTIO_BLK_T_DISCARD);
      default:
        return this.fail(req, VIRTIO_BLK_S_UNSUPP);
    }
  }

  private fail(req: BlkRequest, status: number): number {
    req.status = status;
    return ACT_DONE;
  }

  /** Sector range [lo + hi * 2^32, +bytes): aligned to the logical block size and inside the capacity. */
  private checkRange(req: BlkRequest, lo: number, hi: number, bytes: number): boolean {
    if (bytes < 0 || hi >= 0x200000) return false;
    const sector = lo + hi * 4294967296;
    const bs = this.bsSectors;
    if (bs > 1 && (sector % bs !== 0 || bytes % this.opts.blockSize !== 0)) return false;
    if (bytes % SECTOR_SIZE !== 0) return false;
    if (sector > this.capSectors || sector * SECTOR_SIZE + bytes > this.opts.capacityBytes) return false;
    req.pos = sector * SECTOR_SIZE;
    req.dataLen = bytes;
    return true;
  }

  /** Discard / write-zeroes: segments validated; discard is a hint (nothing to deallocate without fallocate). */
  private prepareDwz(req: BlkRequest, discard: boolean): number {
    if (this.opts.readOnly) return this.fail(req, VIRTIO_BLK_S_IOERR);
    const chain = req.chain;
    const payload = chain.readableBytes - BLK_HEADER_SIZE;
    if (payload <= 0 || payload % BLK_DWZ_SEGMENT_SIZE !== 0) return this.fail(req, VIRTIO_BLK_S_IOERR);
    const nseg = payload / BLK_DWZ_SEGMENT_SIZE;
    const maxSeg = discard ? this.opts.maxDiscardSeg : this.opts.maxWriteZeroesSeg;
    const maxSectors = discard ? this.opts.maxDiscardSectors : this.opts.maxWriteZeroesSectors;
    if (nseg > maxSeg) return this.fail(req, VIRTIO_BLK_S_UNSUPP);
    let total = 0;
    this.zCount = 0;
    const dv = this.segDv;
    for (let i = 0; i < nseg; i++) {
      chain.read(BLK_HEADER_SIZE + i * BLK_DWZ_SEGMENT_SIZE, this.seg, 0, BLK_DWZ_SEGMENT_SIZE);
      const flags = dv.getUint32(BLK_DWZ_FLAGS, true);
      // "MUST set the status byte to VIRTIO_BLK_S_UNSUPP ... if any unknown flag is set ...
      // for discard commands if the unmap flag is set".
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (discard && flags !== 0)) return this.fail(req, VIRTIO_BLK_S_UNSUPP);
      const num = dv.getUint32(BLK_DWZ_NUM_SECTORS, true);
      if (num > maxSectors) return this.fail(req, VIRTIO_BLK_S_IOERR);
      if (!this.checkRange(req, dv.getUint32(BLK_DWZ_SECTOR, true), dv.getUint32(BLK_DWZ_SECTOR + 4, true), num * SECTOR_SIZE)) {
        return this.fail(req, VIRTIO_BLK_S_IOERR);
      }
      this.zPos[i] = req.pos;
      this.zLen[i] = req.dataLen;
      total += req.dataLen;
    }
    this.zCount = nseg;
    req.dataLen = total;
    if (discard || total === 0) return ACT_DONE;
    return ACT_ZERO;
  }

  // -------------------------------------------------------------------------
  // Synchronous I/O.

  private runSync(req: BlkRequest, act: number): void {
    const fd = this.opts.fd;
    try {
      switch (act) {
        case ACT_READ:
          this.readSyncInto(req);
          break;
        case ACT_WRITE:
          this.writeSyncFrom(req);
          if (!this.opts.writeback) fdatasyncSync(fd);
          break;
        case ACT_FLUSH:
          fdatasyncSync(fd);
          break;
        case ACT_ZERO:
          for (let i = 0; i < this.zCount; i++) this.zeroSync(this.zPos[i]!, this.zLen[i]!);
          if (!this.opts.writeback) fdatasyncSync(fd);
          break;
      }
    } catch (e) {
      req.status = VIRTIO_BLK_S_IOERR;
      this.reportIoError(e);
    }
  }

  private readSyncInto(req: BlkRequest): void {
    const chain = req.chain;
    const regions = chain.mem!.regions;
    const log = chain.mem!.log;
    const fd = this.opts.fd;
    let left = req.dataLen;
    let pos = req.pos;
    for (let i = 0; i < chain.count && left > 0; i++) {
      if (chain.segWritable[i] === 0) continue;
      const len = chain.segLen[i]! < left ? chain.segLen[i]! : left;
      const u8 = regions[chain.segRegion[i]!]!.u8;
      const off = chain.segOffset[i]!;
      let done = 0;
      while (done < len) {
        const n = readSync(fd, u8, off + done, len - done, pos + done);
        if (n === 0) throw new Error(`read past the end of the backing file at ${pos + done}`);
        done += n;
      }
      if (log !== null) log.logRange(chain.segGpa[i]!, len);
      req.inLen += len;
      pos += len;
      left -= len;
    }
  }

  private writeSyncFrom(req: BlkRequest): void {
    const chain = req.chain;
    const regions = chain.mem!.regions;
    const fd = this.opts.fd;
    let skip = BLK_HEADER_SIZE;
    let pos = req.pos;
    for (let i = 0; i < chain.count; i++) {
      if (chain.segWritable[i] !== 0) continue;
      let len = chain.segLen[i]!;
      let off = chain.segOffset[i]!;
      if (skip > 0) {
        const k = skip < len ? skip : len;
        skip -= k;
        len -= k;
        off += k;
      }
      if (len === 0) continue;
      const u8 = regions[chain.segRegion[i]!]!.u8;
      let done = 0;
      while (done < len) done += writeSync(fd, u8, off + done, len - done, pos + done);
      pos += len;
    }
  }

  private zeroSync(pos: number, len: number): void {
    const fd = this.opts.fd;
    while (len > 0) {
      const n = writeSync(fd, this.zeros, 0, len < ZERO_CHUNK ? len : ZERO_CHUNK, pos);
      pos += n;
      len -= n;
    }
  }

  // -------------------------------------------------------------------------
  // Asynchronous I/O (libuv threadpool).

  private startAsync(req: BlkRequest, act: number): void {
    req.pending = 1; // held until every operation is issued
    req.moved = 0;
    req.failed = false;
    req.syncing = false;
    const fd = this.opts.fd;
    const chain = req.chain;
    const regions = chain.mem!.regions;
    switch (act) {
      case ACT_READ: {
        let left = req.dataLen;
        let pos = req.pos;
        for (let i = 0; i < chain.count && left > 0; i++) {
          if (chain.segWritable[i] === 0) continue;
          const len = chain.segLen[i]! < left ? chain.segLen[i]! : left;
          req.pending++;
          read(fd, regions[chain.segRegion[i]!]!.u8, chain.segOffset[i]!, len, pos, req.cb);
          pos += len;
          left -= len;
        }
        break;
      }
      case ACT_WRITE: {
        let skip = BLK_HEADER_SIZE;
        let pos = req.pos;
        for (let i = 0; i < chain.count; i++) {
          if (chain.segWritable[i] !== 0) continue;
          let len = chain.segLen[i]!;
          let off = chain.segOffset[i]!;
          if (skip > 0) {
            const k = skip < len ? skip : len;
            skip -= k;
            len -= k;
            off += k;
          }
          if (len === 0) continue;
          req.pending++;
          write(fd, regions[chain.segRegion[i]!]!.u8, off, len, pos, req.cb);
          pos += len;
        }
        break;
      }
      case ACT_FLUSH:
        req.pending++;
        req.syncing = true;
        fdatasync(fd, req.syncCb);
        break;
      case ACT_ZERO:
        for (let s = 0; s < this.zCount; s++) {
          let pos = this.zPos[s]!;
          let len = this.zLen[s]!;
          while (len > 0) {
            const n = len < ZERO_CHUNK ? len : ZERO_CHUNK;
            req.pending++;
            write(fd, this.zeros, 0, n, pos, req.cb);
            pos += n;
            len -= n;
          }
        }
        break;
    }
    this.opDone(req, null, 0);
  }

  /** @internal An asynchronous read/write finished (n bytes), or the issuing pass ended (n = 0). */
  opDone(req: BlkRequest, err: NodeJS.ErrnoException | null, n: number): void {
    if (err !== null) {
      if (!req.failed) this.reportIoError(err);
      req.failed = true;
    } else req.moved += n;
    if (--req.pending > 0) return;
    if (!req.failed && req.moved !== req.dataLen) {
      req.failed = true;
      this.reportIoError(new Error(`short transfer: ${req.moved} of ${req.dataLen} bytes at ${req.pos}`));
    }
    if (req.failed) {
      req.status = VIRTIO_BLK_S_IOERR;
      this.asyncFinish(req);
      return;
    }
    if (req.type === VIRTIO_BLK_T_IN) {
      req.inLen = req.dataLen;
      const log = req.chain.mem!.log;
      if (log !== null) this.logData(req);
    } else if (!this.opts.writeback && (req.type === VIRTIO_BLK_T_OUT || req.type === VIRTIO_BLK_T_WRITE_ZEROES)) {
      // Write-through: durable before it is acknowledged.
      req.pending = 1;
      req.syncing = true;
      fdatasync(this.opts.fd, req.syncCb);
      return;
    }
    this.asyncFinish(req);
  }

  /** @internal fdatasync finished (FLUSH, or the write-through of a write). */
  syncDone(req: BlkRequest, err: NodeJS.ErrnoException | null): void {
    if (err !== null) {
      this.reportIoError(err);
      req.failed = true;
    }
    if (--req.pending > 0) return;
    if (req.failed) req.status = VIRTIO_BLK_S_IOERR;
    this.asyncFinish(req);
  }

  private logData(req: BlkRequest): void {
    const chain = req.chain;
    const log = chain.mem!.log!;
    let left = req.dataLen;
    for (let i = 0; i < chain.count && left > 0; i++) {
      if (chain.segWritable[i] === 0) continue;
      const len = chain.segLen[i]! < left ? chain.segLen[i]! : left;
      log.logRange(chain.segGpa[i]!, len);
      left -= len;
    }
  }

  private asyncFinish(req: BlkRequest): void {
    const delay = this.opts.completionDelayMs ?? 0;
    if (delay > 0) {
      setTimeout(() => this.finishSafely(req), delay);
      return;
    }
    this.finishSafely(req);
  }

  private finishSafely(req: BlkRequest): void {
    try {
      this.finish(req);
    } catch (e) {
      // Outside a module call nothing would catch this: never let it escape a callback.
      this.opts.warn?.(`completion failed: ${(e as Error).message}`);
    }
  }

  // -------------------------------------------------------------------------
  // Completion.

  /** Writes the status byte (last), completes the chain, recycles the request. */
  private finish(req: BlkRequest): void {
    const rs = req.rs!;
    const c = rs.c;
    rs.nInflight--;
    const async = req !== this.syncReq;
    req.rs = null;
    if (async) rs.free.push(req);
    if (req.gen !== rs.gen || rs.ring.device === null) {
      // The ring stopped (or restarted) meanwhile: the entry cannot be pushed. It stays
      // marked in the inflight area, so a restart with it resubmits the request.
      c[C_DROPPED]!++;
      return;
    }
    let len = 0;
    const s = req.statusSeg;
    const chain = req.chain;
    if (s >= 0) {
      const mem: GuestMemory = chain.mem!;
      const off = chain.segOffset[s]! + chain.segLen[s]! - 1;
      mem.regions[chain.segRegion[s]!]!.u8[off] = req.status;
      if (mem.log !== null) mem.log.logRange(chain.segGpa[s]! + chain.segLen[s]! - 1, 1);
      len = req.inLen + 1;
      switch (req.status) {
        case VIRTIO_BLK_S_OK:
          if (req.type === VIRTIO_BLK_T_IN) {
            c[C_READS]!++;
            c[C_BYTES_READ]! += req.inLen;
          } else if (req.type === VIRTIO_BLK_T_OUT) {
            c[C_WRITES]!++;
            c[C_BYTES_WRITTEN]! += req.dataLen;
          } else if (req.type === VIRTIO_BLK_T_FLUSH) c[C_FLUSHES]!++;
          else c[C_OTHERS]!++;
          break;
        case VIRTIO_BLK_S_UNSUPP:
          c[C_UNSUPPORTED]!++;
          break;
        default:
          c[C_IO_ERRORS]!++;
      }
    } else c[C_MALFORMED]!++;
    this.completeHead(rs, req.head, len);
  }

  private completeHead(rs: RingState, head: number, len: number): void {
    const q = rs.inflight;
    if (q !== null) q.markCompleting(head, publishedUsedIdx(rs.ring));
    rs.ring.completeId(head, len);
  }

  private ioErrorsReported = 0;
  private reportIoError(e: unknown): void {
    // Rate-limited: a failing disk must not flood the log (and the count stops at the limit).
    if (this.ioErrorsReported >= 10) return;
    this.ioErrorsReported++;
    this.opts.warn?.(`I/O error: ${(e as Error).message}`);
  }

  // -------------------------------------------------------------------------
  // Stats.

  /** Counters per vring index. */
  counters(): Map<number, RingCounters> {
    const out = new Map<number, RingCounters>();
    for (const rs of this.rings.values()) {
      const c = rs.c;
      out.set(rs.ring.index, {
        requests: c[C_REQUESTS]!,
        reads: c[C_READS]!,
        writes: c[C_WRITES]!,
        flushes: c[C_FLUSHES]!,
        others: c[C_OTHERS]!,
        bytesRead: c[C_BYTES_READ]!,
        bytesWritten: c[C_BYTES_WRITTEN]!,
        ioErrors: c[C_IO_ERRORS]!,
        unsupported: c[C_UNSUPPORTED]!,
        malformed: c[C_MALFORMED]!,
        inflight: rs.nInflight,
        maxInflight: rs.maxInflight,
        resubmitted: c[C_RESUBMITTED]!,
        dropped: c[C_DROPPED]!,
      });
    }
    return out;
  }

  /** The cumulative counters of a vring in their float64 slots, live (tests seed them); null before the ring started. */
  counterSlots(ring: QueueRing): Float64Array | null {
    return this.rings.get(ring)?.c ?? null;
  }

  /** Requests in flight in the engine (all rings). */
  get inflight(): number {
    let n = 0;
    for (const rs of this.rings.values()) n += rs.nInflight;
    return n;
  }
}
