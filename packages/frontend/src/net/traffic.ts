/**
 * The net personality's data path: per queue pair (RX vring 2q, TX vring 2q+1)
 * a pool of TX buffers holding prebuilt probe frames (only sequence number and
 * checksum are written per packet) and a pool of RX buffers that are posted,
 * checked and reposted. Single-threaded, on the event loop: work runs in
 * chunks of about a millisecond between setImmediate turns; when there is
 * nothing to do the loop re-enables notifications and sleeps until a call
 * eventfd fires (Poller) or a timer (rate limit, deadline) expires.
 *
 * Nothing is allocated per packet: buffers, descriptor address/length arrays,
 * the used-buffer record and the accounting bitmaps are preallocated.
 */
import { createUsedBuffer, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, type DriverRing, type GuestRegion, type UsedBuffer } from '@vhost-ts/virtio';
import { native } from '../native.js';
import type { FrontendDevice } from '../device.js';
import {
  QC_BAD,
  QC_BAD_QUEUE,
  QC_CALLS,
  QC_CROSS_PAIR,
  QC_FOREIGN,
  QC_FOREIGN_BAD,
  QC_KICKS,
  QC_KICKS_SUPPRESSED,
  QC_MAC_SWAPPED,
  QC_MERGED,
  QC_RECEIVED,
  QC_RECEIVED_BYTES,
  QC_SENT,
  QC_SENT_BYTES,
  QC_TRUNCATED,
  QC_TX_COMPLETED,
  QC_WINDOW_RESETS,
  QueueCounters,
  SequenceTracker,
  summarize,
  type TrafficSummary,
} from './accounting.js';
import {
  checkForeignIpv4,
  checkFrame,
  checkFrameSize,
  DEFAULT_DST_MAC,
  DEFAULT_SRC_MAC,
  FRAME_BAD_CONTENT,
  FRAME_BAD_LENGTH,
  FRAME_FOREIGN,
  probeQueue,
  probeSeq,
  stampProbe,
  writeProbeTemplate,
} from './packet.js';

function isSwapped(dv: DataView, f: number): boolean {
  for (let i = 0; i < 6; i++) {
    if (dv.getUint8(f + i) !== DEFAULT_SRC_MAC[i] || dv.getUint8(f + 6 + i) !== DEFAULT_DST_MAC[i]) return false;
  }
  return true;
}

export type TrafficMode = 'tx' | 'rx' | 'loop';

export interface NetTrafficOptions {
  mode: TrafficMode;
  /** Frame bytes (Ethernet frame without the virtio-net header). */
  frameSize: number;
  /** Packets per second per queue pair (0 = flat out). */
  rate?: number;
  /** Chains added per ring per step (default 32). */
  burst?: number;
  /** loop: most frames in flight per pair (0 = unlimited; default: as many frames as the RX ring's buffers hold). */
  window?: number;
  /** Busy-poll (never sleep on call eventfds). */
  poll?: boolean;
  /** loop: a full window with nothing back for this long is written off as lost (default 1000 ms). */
  windowStallMs?: number;
  /** Keep polling this long without work before sleeping on notifications (default 200 µs; 0 with a rate limit). */
  spinUs?: number;
  /** Check frame content (default true). */
  verify?: boolean;
  /** TX chains as two descriptors (header, frame) through an indirect table, when the rings have indirect pools. */
  indirectTx?: boolean;
  /** RX buffer bytes (default 2048 with mergeable buffers, else header + frame size rounded up). */
  rxBufferSize?: number;
}

const align64 = (n: number): number => (n + 63) & ~63;

/** virtio-net header size for negotiated features: 12 with VERSION_1 or MRG_RXBUF, else 10. */
export function netHeaderSize(features: bigint): number {
  const v1 = (features >> BigInt(VIRTIO_F_VERSION_1)) & 1n;
  const mrg = (features >> BigInt(VIRTIO_NET_F_MRG_RXBUF)) & 1n;
  return v1 !== 0n || mrg !== 0n ? 12 : 10;
}

interface Pool {
  /** Region views (the pool lies inside one region). */
  u8: Uint8Array;
  buf: Buffer;
  dv: DataView;
  /** Offset of slot 0 inside the region, and its GPA. */
  base: number;
  gpa: number;
  stride: number;
  slots: number;
}

function poolAt(view: NetPortView, gpa: number, slots: number, stride: number): Pool {
  const { region, offset } = view.locate(gpa, slots * stride);
  return {
    u8: region.u8,
    buf: Buffer.from(region.sab, region.sabOffset, region.size),
    dv: region.dv,
    base: offset,
    gpa,
    stride,
    slots,
  };
}

/** One vring as the traffic loop needs it. */
export interface NetVringView {
  index: number;
  size: number;
  ring: DriverRing<number>;
  kickFd: number;
  callFd: number;
  indirect: boolean;
}

/**
 * What the traffic loop drives: a started net device (see {@link devicePortView}),
 * or a worker thread's share of one (some of its queue pairs).
 */
export interface NetPortView {
  features: bigint;
  /** Queue pairs of the device (the range of queue ids in frames). */
  queuePairs: number;
  /** The pairs this loop drives, ascending. */
  pairs: readonly number[];
  /** vring views by vring index (RX 2q, TX 2q+1); only the driven pairs' are needed. */
  vring(index: number): NetVringView;
  /** The guest-memory region holding [gpa, gpa + len), and the offset inside it. */
  locate(gpa: number, len: number): { region: GuestRegion; offset: number };
  /** The GPA of pair q's TX or RX buffer pool of `bytes` (allocated or given). */
  pool(q: number, which: 'tx' | 'rx', bytes: number): number;
  /** Calls `onCall` when vring `index`'s call eventfd fires; closed with the device / worker. */
  watchCalls(index: number, onCall: (count: number) => void): void;
}

/** The port view of a whole started device, on the calling thread. Pools come from its allocator. */
export function devicePortView(device: FrontendDevice): NetPortView {
  const pairs = device.vrings.length >> 1;
  if (pairs < 1 || device.vrings.length % 2 !== 0) throw new RangeError('a net device needs an even number of vrings (RX 2q, TX 2q+1)');
  return {
    features: device.features,
    queuePairs: pairs,
    pairs: Array.from({ length: pairs }, (_, q) => q),
    vring: (i) => {
      const v = device.vrings[i];
      if (v === undefined) throw new RangeError(`no vring ${i}`);
      return v;
    },
    locate: (gpa, len) => device.memory.locate(gpa, len),
    pool: (_q, _which, bytes) => device.memory.allocator.alloc(bytes, 4096).gpa,
    watchCalls: (i, cb) => {
      device.watchCalls(i, cb);
    },
  };
}

/** Bytes of one TX and one RX buffer for these options (what a pool needs per slot). */
export function netBufferStrides(features: bigint, frameSize: number, rxBufferSize?: number): { tx: number; rx: number } {
  const hdr = netHeaderSize(features);
  const mergeable = ((features >> BigInt(VIRTIO_NET_F_MRG_RXBUF)) & 1n) !== 0n;
  const rxBuf = rxBufferSize ?? (mergeable ? 2048 : Math.max(2048, align64(hdr + frameSize)));
  return { tx: align64(hdr + frameSize), rx: align64(rxBuf) };
}

/** loop mode default: a full window with nothing received for this long counts the missing frames as lost. */
export const WINDOW_STALL_MS = 1000;


/** One queue pair's state. */
class PairState {
  readonly q: number;
  readonly rx: DriverRing<number>;
  readonly tx: DriverRing<number>;
  readonly rxKick: number;
  readonly txKick: number;
  readonly counters = new QueueCounters();
  readonly txPool: Pool;
  readonly rxPool: Pool;
  readonly txFree: Int32Array;
  txFreeCount = 0;
  /** loop: frames written off as lost to reopen the window after a stall. */
  writtenOff = 0;
  lastRxProgress = 0;
  /** Mergeable frame being assembled across steps. */
  mergeRemaining = 0;
  mergeLen = 0;

  constructor(q: number, rx: DriverRing<number>, tx: DriverRing<number>, rxKick: number, txKick: number, txPool: Pool, rxPool: Pool) {
    this.q = q;
    this.rx = rx;
    this.tx = tx;
    this.rxKick = rxKick;
    this.txKick = txKick;
    this.txPool = txPool;
    this.rxPool = rxPool;
    this.txFree = new Int32Array(txPool.slots);
    for (let i = txPool.slots - 1; i >= 0; i--) this.txFree[this.txFreeCount++] = i;
  }
}

export interface TrafficProgress {
  /** Seconds since start. */
  t: number;
  queues: { q: number; sent: number; received: number }[];
}

/** Result of a run: the summary plus per-queue notification counters. */
export type TrafficResult = TrafficSummary & {
  queues: TrafficSummary[];
  seconds: number;
  txPps: number;
  rxPps: number;
  kicks: number;
  calls: number;
};

export class NetTraffic {
  readonly view: NetPortView;
  readonly options: Required<Omit<NetTrafficOptions, 'rxBufferSize' | 'window'>> & { window: number };
  readonly pairs: PairState[] = [];
  /** trackers[q]: what arrived from TX queue q (by the queue id in the frames). */
  readonly trackers: SequenceTracker[] = [];
  readonly hdrLen: number;
  readonly mergeable: boolean;
  private readonly used: UsedBuffer<number> = createUsedBuffer<number>();
  private readonly addrs = new Float64Array(2);
  private readonly lens = new Float64Array(2);
  private readonly scratch: Buffer;
  private readonly scratchDv: DataView;
  private readonly txSegments: number;
  private readonly useIndirectTx: boolean;
  private sending = false;
  private receiving = false;
  private stopRequested = false;
  private wake: (() => void) | null = null;
  private startTime = 0;
  private txBudgetStart = 0;

  constructor(source: FrontendDevice | NetPortView, options: NetTrafficOptions) {
    checkFrameSize(options.frameSize);
    const view = 'client' in source ? devicePortView(source) : source;
    this.view = view;
    this.hdrLen = netHeaderSize(view.features);
    this.mergeable = ((view.features >> BigInt(VIRTIO_NET_F_MRG_RXBUF)) & 1n) !== 0n;
    const first = view.pairs[0];
    if (first === undefined) throw new RangeError('no queue pair to drive');
    const rxRingSize = view.vring(2 * first).size;
    const strides = netBufferStrides(view.features, options.frameSize, options.rxBufferSize);
    // A frame takes this many RX buffers (mergeable): the default window never asks for more than the ring holds.
    const buffersPerFrame = Math.max(1, Math.ceil((this.hdrLen + options.frameSize) / strides.rx));
    this.options = {
      mode: options.mode,
      frameSize: options.frameSize,
      rate: options.rate ?? 0,
      burst: options.burst ?? 32,
      window: options.window ?? Math.max(1, Math.floor(rxRingSize / buffersPerFrame)),
      poll: options.poll ?? false,
      spinUs: options.spinUs ?? ((options.rate ?? 0) > 0 ? 0 : 200),
      verify: options.verify ?? true,
      indirectTx: options.indirectTx ?? false,
      windowStallMs: options.windowStallMs ?? WINDOW_STALL_MS,
    };
    this.useIndirectTx = this.options.indirectTx && view.vring(2 * first + 1).indirect;
    this.txSegments = this.useIndirectTx ? 2 : 1;
    if (strides.rx < this.hdrLen + 14) throw new RangeError(`RX buffers of ${strides.rx} bytes cannot hold a header and an Ethernet header`);
    this.scratch = Buffer.alloc(65536 + 64);
    this.scratchDv = new DataView(this.scratch.buffer, this.scratch.byteOffset, this.scratch.byteLength);
    for (let q = 0; q < view.queuePairs; q++) this.trackers.push(new SequenceTracker());
    for (const q of view.pairs) {
      const rxV = view.vring(2 * q);
      const txV = view.vring(2 * q + 1);
      const txPool = poolAt(view, view.pool(q, 'tx', txV.size * strides.tx), txV.size, strides.tx);
      const rxPool = poolAt(view, view.pool(q, 'rx', rxV.size * strides.rx), rxV.size, strides.rx);
      const p = new PairState(q, rxV.ring, txV.ring, rxV.kickFd, txV.kickFd, txPool, rxPool);
      for (let s = 0; s < txPool.slots; s++) {
        const off = txPool.base + s * txPool.stride;
        txPool.u8.fill(0, off, off + this.hdrLen);
        writeProbeTemplate(txPool.u8, txPool.dv, off + this.hdrLen, options.frameSize, q);
      }
      this.pairs.push(p);
    }
  }

  /** Posts every RX buffer (rx and loop modes) and starts watching the call eventfds. */
  private setup(): void {
    const mode = this.options.mode;
    this.receiving = mode !== 'tx';
    for (const p of this.pairs) {
      if (this.receiving) {
        const pool = p.rxPool;
        for (let s = 0; s < pool.slots; s++) {
          this.addrs[0] = pool.gpa + s * pool.stride;
          this.lens[0] = pool.stride;
          if (p.rx.add(this.addrs, this.lens, 0, 1, s) < 0) break;
        }
        if (p.rx.needsKick()) this.kick(p, p.rxKick);
      }
      if (!this.options.poll) {
        const onCall = (n: number): void => {
          if (n > 0) p.counters.stat[QC_CALLS]!++;
          this.poke();
        };
        this.view.watchCalls(2 * p.q, onCall);
        this.view.watchCalls(2 * p.q + 1, onCall);
      }
      // Busy by default: no interrupts while we are polling anyway.
      p.rx.disableCallbacks();
      p.tx.disableCallbacks();
    }
  }

  private kick(p: PairState, fd: number): void {
    native.eventfdWrite(fd, 1);
    p.counters.stat[QC_KICKS]!++;
  }

  private poke(): void {
    const w = this.wake;
    if (w !== null) {
      this.wake = null;
      w();
    }
  }

  /** Frames pair p may send now (rate and window limits). */
  private txAllowance(p: PairState, now: number): number {
    let n = this.options.burst;
    const c = p.counters.stat;
    const sent = c[QC_SENT]!;
    if (this.options.rate > 0) {
      const due = Math.floor(((now - this.txBudgetStart) / 1000) * this.options.rate) - sent;
      if (due < n) n = due;
    }
    if (this.options.mode === 'loop' && this.options.window > 0) {
      // What came back: distinct good frames of this stream plus corrupted ones (without checks: everything received).
      const back = this.options.verify ? this.trackers[p.q]!.unique + c[QC_BAD]! : c[QC_RECEIVED]!;
      let inflight = sent - back - p.writtenOff;
      if (inflight >= this.options.window && now - p.lastRxProgress > this.options.windowStallMs) {
        // Nothing came back for a long time with a full window: what is missing is lost; reopen the window.
        // (Writing off frames that are merely late could overflow the RX ring when they do arrive.)
        p.writtenOff = sent - back;
        c[QC_WINDOW_RESETS]!++;
        p.lastRxProgress = now;
        inflight = 0;
      }
      const credit = this.options.window - inflight;
      if (credit < n) n = credit;
    }
    return n > 0 ? n : 0;
  }

  /** Reclaims used TX buffers and sends up to the allowance. Returns work done. */
  private txStep(p: PairState, now: number): number {
    const ring = p.tx;
    const used = this.used;
    let work = 0;
    while (ring.getUsed(used)) {
      p.txFree[p.txFreeCount++] = used.token!;
      p.counters.stat[QC_TX_COMPLETED]!++;
      work++;
    }
    if (!this.sending) return work;
    let n = this.txAllowance(p, now);
    if (n > p.txFreeCount) n = p.txFreeCount;
    if (n === 0) return work;
    const pool = p.txPool;
    const hdr = this.hdrLen;
    const frame = this.options.frameSize;
    const addrs = this.addrs;
    const lens = this.lens;
    const indirect = this.useIndirectTx;
    const segs = this.txSegments;
    const c = p.counters.stat;
    // A frame's sequence number is the count of frames sent before it on this queue.
    const seq = c[QC_SENT]!;
    let sent = 0;
    for (let i = 0; i < n; i++) {
      const slot = p.txFree[--p.txFreeCount]!;
      const off = pool.base + slot * pool.stride;
      stampProbe(pool.dv, off + hdr, seq + sent, frame);
      const gpa = pool.gpa + slot * pool.stride;
      if (segs === 1) {
        addrs[0] = gpa;
        lens[0] = hdr + frame;
      } else {
        addrs[0] = gpa;
        lens[0] = hdr;
        addrs[1] = gpa + hdr;
        lens[1] = frame;
      }
      if (ring.add(addrs, lens, segs, 0, slot, indirect) < 0) {
        p.txFreeCount++; // ring full: slot stays free
        break;
      }
      sent++;
    }
    if (sent > 0) {
      c[QC_SENT]! += sent;
      c[QC_SENT_BYTES]! += sent * frame;
      if (ring.needsKick()) this.kick(p, p.txKick);
      else c[QC_KICKS_SUPPRESSED]!++;
    }
    return work + sent;
  }

  /** Takes used RX buffers, checks and accounts the frames, reposts the buffers. Returns work done. */
  private rxStep(p: PairState, now: number): number {
    const ring = p.rx;
    const used = this.used;
    const pool = p.rxPool;
    const hdr = this.hdrLen;
    const addrs = this.addrs;
    const lens = this.lens;
    let taken = 0;
    const max = this.options.burst * 4;
    while (taken < max && ring.getUsed(used)) {
      taken++;
      const slot = used.token!;
      const off = pool.base + slot * pool.stride;
      if (p.mergeRemaining > 0) {
        // Continuation buffer of a mergeable frame: append its bytes.
        this.appendMerged(p, off, used.len, slot);
      } else {
        const nb = this.mergeable ? pool.dv.getUint16(off + 10, true) : 1;
        if (used.len < hdr) {
          p.counters.stat[QC_BAD]!++;
        } else if (nb <= 1) {
          this.account(p, pool.buf, pool.dv, off + hdr, used.len - hdr);
        } else {
          p.counters.stat[QC_MERGED]!++;
          p.mergeRemaining = nb - 1;
          p.mergeLen = 0;
          this.appendMerged(p, off + hdr, used.len - hdr, -1);
          // The first buffer is reposted now: its bytes were copied.
        }
      }
      addrs[0] = pool.gpa + slot * pool.stride;
      lens[0] = pool.stride;
      ring.add(addrs, lens, 0, 1, slot);
    }
    if (taken > 0) {
      p.lastRxProgress = now;
      if (ring.needsKick()) this.kick(p, p.rxKick);
    }
    return taken;
  }

  /** Appends `len` bytes at region offset `off` to the frame being merged; `slot` < 0 for the first buffer. */
  private appendMerged(p: PairState, off: number, len: number, slot: number): void {
    if (p.mergeLen + len <= this.scratch.length) p.rxPool.buf.copy(this.scratch, p.mergeLen, off, off + len);
    p.mergeLen += len;
    if (slot >= 0) p.mergeRemaining--;
    if (p.mergeRemaining === 0) {
      if (p.mergeLen > this.scratch.length) p.counters.stat[QC_TRUNCATED]!++;
      else this.account(p, this.scratch, this.scratchDv, 0, p.mergeLen);
    }
  }

  private account(p: PairState, buf: Buffer, dv: DataView, f: number, len: number): void {
    const c = p.counters.stat;
    c[QC_RECEIVED]!++;
    c[QC_RECEIVED_BYTES]! += len;
    if (!this.options.verify) return;
    const verdict = checkFrame(buf, dv, f, len);
    if (verdict === 0) {
      const src = probeQueue(dv, f);
      if (src >= this.trackers.length) {
        c[QC_BAD_QUEUE]!++;
        return;
      }
      if (src !== p.q) c[QC_CROSS_PAIR]!++;
      this.trackers[src]!.record(probeSeq(dv, f));
      // Our frames leave with dst ..:02 / src ..:01 (DEFAULT_*_MAC): a swapped pair means macswap.
      if (dv.getUint8(f + 5) === DEFAULT_SRC_MAC[5] && dv.getUint8(f + 11) === DEFAULT_DST_MAC[5] && isSwapped(dv, f)) c[QC_MAC_SWAPPED]!++;
    } else if (verdict === FRAME_FOREIGN) {
      c[QC_FOREIGN]!++;
      if (checkForeignIpv4(dv, f, len) === false) c[QC_FOREIGN_BAD]!++;
    } else if (verdict === FRAME_BAD_LENGTH || verdict === FRAME_BAD_CONTENT) {
      c[QC_BAD]!++;
    }
  }

  /** Asks a running run() to end early (drain still happens). */
  stop(): void {
    this.stopRequested = true;
    this.poke();
  }

  /** A snapshot of the counters for progress lines. */
  progress(): TrafficProgress {
    return {
      t: (performance.now() - this.startTime) / 1000,
      queues: this.pairs.map((p) => ({ q: p.q, sent: p.counters.sent, received: p.counters.received })),
    };
  }

  /**
   * Runs traffic for `seconds`, then drains for up to `drainMs` (TX stopped,
   * RX continues until every frame came back or nothing arrived for drainMs).
   */
  async run(seconds: number, drainMs = 500, tick?: { intervalMs: number; onTick: (p: TrafficProgress) => void }): Promise<TrafficResult> {
    this.setup();
    const mode = this.options.mode;
    this.sending = mode !== 'rx';
    this.startTime = performance.now();
    this.txBudgetStart = this.startTime;
    const end = this.startTime + seconds * 1000;
    for (const p of this.pairs) p.lastRxProgress = this.startTime;
    const ticker = tick ? setInterval(() => tick.onTick(this.progress()), tick.intervalMs) : undefined;
    try {
      await this.loop((now) => now >= end || this.stopRequested);
    } finally {
      clearInterval(ticker);
    }
    const trafficEnd = performance.now();
    this.sending = false;
    if (drainMs > 0 && mode !== 'rx') {
      let last = performance.now();
      let lastCount = this.totalDone();
      await this.loop((now) => {
        const done = this.totalDone();
        if (done !== lastCount) {
          lastCount = done;
          last = now;
        }
        return this.drained() || now - last > drainMs;
      }, drainMs);
    }
    const elapsed = (trafficEnd - this.startTime) / 1000;
    const sum = summarize(
      this.pairs.map((p) => p.counters),
      this.pairs.map((p) => this.trackers[p.q]),
      // Loss is known only for our own frames coming back, and only when they were checked.
      mode === 'loop' && this.options.verify,
    );
    let kicks = 0;
    let calls = 0;
    for (const p of this.pairs) {
      kicks += p.counters.kicks;
      calls += p.counters.calls;
    }
    return {
      ...sum,
      seconds: elapsed,
      txPps: elapsed > 0 ? sum.sent / elapsed : 0,
      rxPps: elapsed > 0 ? sum.received / elapsed : 0,
      kicks,
      calls,
    };
  }

  private totalDone(): number {
    let n = 0;
    for (const p of this.pairs) n += p.counters.received + p.counters.txCompleted;
    return n;
  }

  private drained(): boolean {
    for (const p of this.pairs) {
      if (p.counters.txCompleted < p.counters.sent) return false;
      if (this.options.mode === 'loop' && this.trackers[p.q]!.unique + this.trackers[p.q]!.late < p.counters.sent) return false;
    }
    return true;
  }

  /**
   * The scheduler. One turn runs for about a millisecond: steps every pair,
   * and keeps spinning through idle steps for up to `spinUs` (a back-end on
   * another core answers within microseconds; an event-loop turn costs more).
   * Then it yields with setImmediate (work was done, or --poll), or re-enables
   * notifications and sleeps until a call eventfd or a timer fires.
   */
  private loop(done: (now: number) => boolean, maxSleepMs = 50): Promise<void> {
    const spinMs = this.options.spinUs / 1000;
    return new Promise<void>((resolve, reject) => {
      const step = (): void => {
        try {
          let now = performance.now();
          const chunkEnd = now + 1;
          let lastWork = now;
          let any = false;
          for (let iter = 0; ; iter++) {
            if (done(now)) return resolve();
            let work = 0;
            for (const p of this.pairs) {
              work += this.txStep(p, now);
              if (this.receiving) work += this.rxStep(p, now);
            }
            now = performance.now();
            if (work !== 0) {
              any = true;
              lastWork = now;
            } else if (now - lastWork >= spinMs) {
              break;
            }
            if (now >= chunkEnd) break;
          }
          if (any || this.options.poll) setImmediate(step);
          else this.sleep(maxSleepMs, step);
        } catch (e) {
          reject(e);
        }
      };
      step();
    });
  }

  /** Re-enables notifications, re-checks, and waits for a call or a timer. */
  private sleep(maxSleepMs: number, then: () => void): void {
    let pending = this.stopRequested;
    for (const p of this.pairs) {
      if (this.receiving && p.rx.enableCallbacks()) pending = true;
      // TX completions matter when we are waiting for free slots or draining.
      if (p.tx.enableCallbacks()) pending = true;
    }
    let wait = maxSleepMs;
    if (this.sending && this.options.rate > 0) wait = Math.min(wait, Math.max(1, Math.ceil(1000 / this.options.rate)));
    let timer: NodeJS.Timeout | undefined;
    const resume = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      this.wake = null;
      for (const p of this.pairs) {
        p.rx.disableCallbacks();
        p.tx.disableCallbacks();
      }
      setImmediate(then);
    };
    if (pending) {
      resume();
      return;
    }
    timer = setTimeout(resume, wait);
    this.wake = resume;
  }
}
