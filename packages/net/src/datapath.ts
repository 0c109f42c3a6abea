/**
 * The virtio-net data path of one queue pair (RX vring 2i, TX vring 2i+1),
 * shared by the shipped modules. Zero allocation per packet: every Chain,
 * header and scratch buffer is allocated when the pair is built.
 *
 * - TX (guest -> us): {@link NetQueuePair.popTx} pops a chain from the guest's
 *   TX ring into `txChain`, checks and parses its virtio_net_hdr (12 bytes with
 *   VERSION_1 or MRG_RXBUF, else 10) and exposes the frame length and offload
 *   metadata. Malformed chains (too short, GSO we never offered, a checksum
 *   offset outside the frame) are completed and counted in `txErrors`.
 * - RX (us -> guest): one frame at a time goes into the guest's RX ring, from
 *   the popped TX chain ({@link NetQueuePair.rxFromTx}: guest-to-guest copy,
 *   copyWithin inside a region) or from a buffer ({@link NetQueuePair.rxFromBuffer}).
 *   The header is written in front (num_buffers = buffers used). With
 *   MRG_RXBUF a frame is spread over as many RX chains as it needs; without
 *   it, it must fit one chain. Used lengths are the bytes written (header +
 *   frame part) per chain. Writes go through Chain.write/copyTo, so dirty
 *   pages are logged while migration logging is on.
 * - Backpressure: when the RX ring runs dry in the middle of a frame the
 *   frame stays pending (`rxBusy`) and {@link NetQueuePair.rxPump} continues
 *   it once the guest posts buffers; its chains are completed together, in
 *   order (IN_ORDER-safe). A pending frame is abandoned (its chains completed
 *   with length 0, counted in `rxDropped`) when the RX ring is disabled or
 *   stopped, or the memory table changes.
 */
import { defineStatAccessors, hasFeature, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF } from '@vhost-ts/virtio';
import type { Chain, QueueContext, QueueRing } from '@vhost-ts/workers/module-api';
import {
  HDR_CSUM_OFFSET,
  HDR_CSUM_START,
  HDR_FLAGS,
  HDR_GSO_TYPE,
  HDR_NUM_BUFFERS,
  MAX_FRAME,
  MIN_FRAME,
  NET_HDR_V1_LEN,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  netHeaderLength,
} from './virtio-net.js';

/** {@link NetQueuePair.rxFromTx} / rxFromBuffer / rxPump results. */
export const RX_DONE = 1;
/** The RX ring ran dry: the frame is pending, call rxPump() later. */
export const RX_PENDING = 0;
/** The frame was dropped (counted in rxDropped). */
export const RX_DROPPED = -1;

const SRC_NONE = 0;
const SRC_CHAIN = 1;
const SRC_BUFFER = 2;

/** Counters of one queue pair (from the device's point of view of the guest's rings). */
export interface NetPairCounters {
  /** Frames taken from the guest's TX ring. */
  txPackets: number;
  txBytes: number;
  /** Malformed TX chains completed without processing. */
  txErrors: number;
  /** Frames delivered into the guest's RX ring. */
  rxPackets: number;
  rxBytes: number;
  /** Frames that could not be delivered (no RX buffers, buffers too small, abandoned). */
  rxDropped: number;
  /** Frames delivered over more than one RX buffer (MRG_RXBUF). */
  rxMerged: number;
}

// Slots of NetQueuePair.stat.
const ST_TX_PACKETS = 0;
const ST_TX_BYTES = 1;
const ST_TX_ERRORS = 2;
const ST_RX_PACKETS = 3;
const ST_RX_BYTES = 4;
const ST_RX_DROPPED = 5;
const ST_RX_MERGED = 6;
const ST_COUNT = 7;
const STAT_SLOTS: Readonly<Record<keyof NetPairCounters, number>> = {
  txPackets: ST_TX_PACKETS,
  txBytes: ST_TX_BYTES,
  txErrors: ST_TX_ERRORS,
  rxPackets: ST_RX_PACKETS,
  rxBytes: ST_RX_BYTES,
  rxDropped: ST_RX_DROPPED,
  rxMerged: ST_RX_MERGED,
};

export class NetQueuePair implements NetPairCounters {
  /** Queue pair number i (RX vring 2i, TX vring 2i+1). */
  readonly pair: number;
  readonly rx: QueueRing;
  readonly tx: QueueRing;
  /** virtio_net_hdr length on both rings (12 or 10). */
  hdrLen = NET_HDR_V1_LEN;
  /** MRG_RXBUF negotiated: a frame may span several RX chains. */
  mergeable = false;
  /** GUEST_CSUM negotiated: partial checksums may be passed to the guest. */
  guestCsum = false;

  /** The chain popped by popTx(), valid until it is completed. */
  readonly txChain: Chain;
  /** Frame bytes in txChain (after the header). */
  txFrameLen = 0;
  /** Offload metadata of the TX header. */
  txFlags = 0;
  txCsumStart = 0;
  txCsumOffset = 0;
  /** A reusable frame buffer for modules that edit frames (grows on demand, never per packet in steady state). */
  scratch: Uint8Array;

  /**
   * The counters, slots ST_*. A Float64Array, not number fields: byte counters pass 2^30 within
   * seconds at line rate, and a number field that outgrows V8's small integers changes
   * representation once, mid-run, deoptimising every function that touched this object
   * (observed with --trace-deopt: an "overflow" deopt, then a "wrong map" cascade over the
   * whole echo path, and its garbage). Float64 holds exact integers up to 2^53.
   */
  readonly stat = new Float64Array(ST_COUNT);
  // The NetPairCounters names are accessors over `stat` (defined after the class).
  declare txPackets: number;
  declare txBytes: number;
  declare txErrors: number;
  declare rxPackets: number;
  declare rxBytes: number;
  declare rxDropped: number;
  declare rxMerged: number;

  private readonly ctx: QueueContext;
  private txHeld = false;
  private readonly txHdr = new Uint8Array(NET_HDR_V1_LEN);
  private readonly rxHdr = new Uint8Array(NET_HDR_V1_LEN);
  /** rxHdr holds offload fields from the previous frame (else it is zeros apart from num_buffers). */
  private rxHdrDirty = false;
  private rxChains: Chain[] = [];
  private rxLens = new Uint32Array(0);
  private nRx = 0;
  private rxPos = 0;
  private rxTotal = 0;
  private srcKind = SRC_NONE;
  /** SRC_CHAIN: the TX chain is completed when the frame is done. */
  private srcBuf: Uint8Array;
  private srcOff = 0;
  private srcSkip = 0;
  private prefix: Uint8Array | null = null;
  private prefixLen = 0;
  private frameLen = 0;

  constructor(ctx: QueueContext, pair: number, rx: QueueRing, tx: QueueRing) {
    this.ctx = ctx;
    this.pair = pair;
    this.rx = rx;
    this.tx = tx;
    this.txChain = ctx.newChain();
    this.scratch = new Uint8Array(2048);
    this.srcBuf = this.scratch;
    this.growRx(8);
    this.featuresChanged(ctx.features);
  }

  /**
   * The queue pairs of a worker's group: for every RX vring 2i whose TX 2i+1 is
   * in the group. Both rings are switched to 'manual' (the module pops them).
   */
  static fromContext(ctx: QueueContext): NetQueuePair[] {
    const out: NetQueuePair[] = [];
    for (const r of ctx.rings) {
      if (r.index % 2 !== 0) continue;
      const tx = ctx.ring(r.index + 1);
      if (tx === undefined) continue;
      r.mode = 'manual';
      tx.mode = 'manual';
      out.push(new NetQueuePair(ctx, r.index / 2, r, tx));
    }
    return out;
  }

  /** Re-reads the negotiated features (header length, mergeable, checksum offload). */
  featuresChanged(features: bigint): void {
    this.hdrLen = netHeaderLength(features);
    this.mergeable = hasFeature(features, VIRTIO_NET_F_MRG_RXBUF);
    this.guestCsum = hasFeature(features, VIRTIO_NET_F_GUEST_CSUM);
  }

  /** True while both rings are served. */
  get active(): boolean {
    return this.rx.active && this.tx.active;
  }

  // -------------------------------------------------------------------------
  // TX: the guest's transmit ring.

  /**
   * Pops the next well-formed TX chain into `txChain` and parses its header;
   * false when the TX ring is empty. The previous TX chain must have been
   * consumed (completeTx, rxFromTx). Malformed chains are completed and
   * counted on the way.
   */
  popTx(): boolean {
    if (this.txHeld) throw new Error(`queue pair ${this.pair}: popTx() while the previous TX chain is not completed`);
    const c = this.txChain;
    const hdrLen = this.hdrLen;
    const h = this.txHdr;
    for (;;) {
      if (!this.tx.popInto(c)) return false;
      this.txHeld = true;
      const readable = c.readableBytes;
      const frameLen = readable - hdrLen;
      if (frameLen < MIN_FRAME || frameLen > MAX_FRAME) {
        this.dropTx();
        continue;
      }
      // Fast path: the header lies in the first (readable) segment; read it in place.
      let src: Uint8Array = h;
      let o = 0;
      if (c.segWritable[0] === 0 && c.segLen[0]! >= hdrLen) {
        src = c.mem!.regions[c.segRegion[0]!]!.u8;
        o = c.segOffset[0]!;
      } else {
        c.read(0, h, 0, hdrLen);
      }
      // We never offer HOST_TSO/UFO: a GSO header is a driver bug.
      if (((src[o + HDR_GSO_TYPE] as number) & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_NONE) {
        this.dropTx();
        continue;
      }
      const flags = src[o + HDR_FLAGS] as number;
      if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
        const start = (src[o + HDR_CSUM_START] as number) | ((src[o + HDR_CSUM_START + 1] as number) << 8);
        const off = (src[o + HDR_CSUM_OFFSET] as number) | ((src[o + HDR_CSUM_OFFSET + 1] as number) << 8);
        if (start + off + 2 > frameLen) {
          this.dropTx();
          continue;
        }
        this.txCsumStart = start;
        this.txCsumOffset = off;
        this.txFlags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      } else {
        this.txFlags = 0;
        this.txCsumStart = 0;
        this.txCsumOffset = 0;
      }
      this.txFrameLen = frameLen;
      this.stat[ST_TX_PACKETS]!++;
      this.stat[ST_TX_BYTES]! += frameLen;
      return true;
    }
  }

  /** Completes the current TX chain (used length 0: the device writes nothing into TX buffers). */
  completeTx(): void {
    if (!this.txHeld) return;
    this.txHeld = false;
    if (this.tx.device !== null) this.tx.complete(this.txChain, 0);
  }

  /**
   * Publishes the TX completions staged so far (one used-index store), ahead
   * of the runtime's flush after the module call, which publishes the RX ring
   * first. Call it at the end of a burst that moved frames from TX to RX: a
   * driver that reclaims TX descriptors only when it transmits again (DPDK's
   * virtio PMD, which then drops what does not fit) must see a frame's TX
   * completion no later than the frame itself on RX, or an echo loop starves.
   */
  publishTx(): void {
    this.tx.device?.flush();
  }

  /** Copies `len` frame bytes of the current TX chain from frame offset `from` into dst[dstOff..]; returns bytes copied. */
  readTx(from: number, dst: Uint8Array, dstOff: number, len: number): number {
    return this.txChain.read(this.hdrLen + from, dst, dstOff, len);
  }

  /**
   * Copies the whole current TX frame into `scratch` (grown if needed) and
   * returns its length.
   */
  readTxFrame(): number {
    const n = this.txFrameLen;
    if (this.scratch.length < n) this.growScratch(n);
    return this.txChain.read(this.hdrLen, this.scratch, 0, n);
  }

  private dropTx(): void {
    this.stat[ST_TX_ERRORS]!++;
    this.completeTx();
  }

  // -------------------------------------------------------------------------
  // RX: the guest's receive ring.

  /** True while a frame is pending (waiting for RX buffers). Start no other frame meanwhile. */
  get rxBusy(): boolean {
    return this.srcKind !== SRC_NONE;
  }

  /**
   * Delivers the current TX frame into the RX ring (the echo path), copying
   * guest memory to guest memory. `prefix[0, prefixLen)` replaces the frame's
   * first bytes (macswap passes the swapped addresses). The TX chain is
   * completed when the frame is done or dropped.
   */
  rxFromTx(prefix: Uint8Array | null = null, prefixLen = 0): number {
    if (!this.txHeld) throw new Error(`queue pair ${this.pair}: rxFromTx() without a popped TX chain`);
    if (this.srcKind !== SRC_NONE) throw new Error(`queue pair ${this.pair}: rxFromTx() while a frame is pending`);
    const len = this.txFrameLen;
    if ((this.txFlags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !this.guestCsum) {
      // The receiver cannot take a partial checksum: finish it in the scratch frame.
      const n = this.readTxFrame();
      if (prefix !== null) for (let i = 0; i < prefixLen && i < n; i++) this.scratch[i] = prefix[i] as number;
      this.completeTx();
      return this.rxFromBuffer(this.scratch, 0, n, VIRTIO_NET_HDR_F_NEEDS_CSUM, this.txCsumStart, this.txCsumOffset);
    }
    this.setRxHeader(this.txFlags, this.txCsumStart, this.txCsumOffset);
    this.srcKind = SRC_CHAIN;
    this.srcSkip = this.hdrLen;
    this.prefix = prefix;
    this.prefixLen = prefix === null ? 0 : prefixLen;
    this.beginFrame(len);
    return this.rxPump();
  }

  /**
   * Delivers buf[off, off+len) into the RX ring. The buffer must stay
   * unchanged while the frame is pending. `flags` may carry NEEDS_CSUM with
   * csumStart/csumOffset: passed to the guest with GUEST_CSUM, else the
   * checksum is completed in `buf` first.
   */
  rxFromBuffer(buf: Uint8Array, off: number, len: number, flags = 0, csumStart = 0, csumOffset = 0): number {
    if (this.srcKind !== SRC_NONE) throw new Error(`queue pair ${this.pair}: rxFromBuffer() while a frame is pending`);
    if (len < MIN_FRAME || len > MAX_FRAME || off < 0 || off + len > buf.length) {
      this.stat[ST_RX_DROPPED]!++;
      return RX_DROPPED;
    }
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
      if (csumStart + csumOffset + 2 > len) {
        this.stat[ST_RX_DROPPED]!++;
        return RX_DROPPED;
      }
      if (!this.guestCsum) {
        completeChecksum(buf, off, len, csumStart, csumOffset);
        flags = 0;
      }
    }
    this.setRxHeader(flags, csumStart, csumOffset);
    this.srcKind = SRC_BUFFER;
    this.srcBuf = buf;
    this.srcOff = off;
    this.prefix = null;
    this.prefixLen = 0;
    this.beginFrame(len);
    return this.rxPump();
  }

  /**
   * Like rxFromBuffer, for sources that cannot wait (an announcement): when a
   * frame is pending or the RX ring has no buffer, the frame is dropped and
   * counted at once. A frame that runs out of buffers halfway stays pending
   * (keep `buf` unchanged until rxBusy is false).
   */
  rxTryBuffer(buf: Uint8Array, off: number, len: number): number {
    if (this.srcKind !== SRC_NONE || this.rx.available() === 0) {
      this.stat[ST_RX_DROPPED]!++;
      return RX_DROPPED;
    }
    return this.rxFromBuffer(buf, off, len);
  }

  /**
   * Continues the pending frame: pops RX chains until it is written. Returns
   * RX_DONE (delivered, chains completed), RX_PENDING (the RX ring is dry) or
   * RX_DROPPED. Without a pending frame, returns RX_DONE.
   */
  rxPump(): number {
    if (this.srcKind === SRC_NONE) return RX_DONE;
    const rx = this.rx;
    if (!rx.active) return this.abandonRx();
    const hdrLen = this.hdrLen;
    const total = this.rxTotal;
    while (this.rxPos < total) {
      const k = this.nRx;
      if (k > 0 && !this.mergeable) return this.abandonRx(); // unreachable: the first chain was checked
      if (k >= rx.size) return this.abandonRx(); // the frame can never fit the ring
      if (k === this.rxChains.length) this.growRx(k * 2);
      const c = this.rxChains[k]!;
      if (!rx.popInto(c)) return RX_PENDING;
      this.nRx = k + 1;
      const cap = c.writableBytes;
      // "each buffer MUST be at least the size of the struct virtio_net_hdr"; without MRG_RXBUF one buffer takes all.
      if (cap < hdrLen || (!this.mergeable && cap < total)) {
        this.rxLens[k] = 0;
        return this.abandonRx();
      }
      const pos = this.rxPos;
      const w = cap < total - pos ? cap : total - pos;
      const a = (pos > hdrLen ? pos : hdrLen) - hdrLen;
      const b = pos + w - hdrLen;
      if (b > a) this.copyFrame(c, a, b - a, a + hdrLen - pos);
      this.rxLens[k] = w;
      this.rxPos = pos + w;
    }
    // Every byte is placed: write the header (num_buffers known now) and complete in order.
    const n = this.nRx;
    const h = this.rxHdr;
    if (hdrLen === NET_HDR_V1_LEN) {
      h[HDR_NUM_BUFFERS] = n & 0xff;
      h[HDR_NUM_BUFFERS + 1] = n >>> 8;
    }
    const first = this.rxChains[0]!;
    if (first.segWritable[0] === 1 && first.segLen[0]! >= hdrLen) {
      // Fast path: the header fits the first segment; write it in place and log it.
      const mem = first.mem!;
      const reg = mem.regions[first.segRegion[0]!]!;
      const o = first.segOffset[0]!;
      if (hdrLen === NET_HDR_V1_LEN && !this.rxHdrDirty) {
        // The usual header (no offload fields): zeros and num_buffers in 4 stores, not 12.
        const dv = reg.dv;
        dv.setUint32(o, 0, true);
        dv.setUint32(o + 4, 0, true);
        dv.setUint16(o + 8, 0, true);
        dv.setUint16(o + HDR_NUM_BUFFERS, n, true);
      } else {
        const u8 = reg.u8;
        for (let i = 0; i < hdrLen; i++) u8[o + i] = h[i] as number;
      }
      if (mem.log !== null) mem.log.logRange(first.segGpa[0]!, hdrLen);
    } else {
      first.write(0, h, 0, hdrLen);
    }
    for (let i = 0; i < n; i++) rx.complete(this.rxChains[i]!, this.rxLens[i]!);
    this.stat[ST_RX_PACKETS]!++;
    this.stat[ST_RX_BYTES]! += this.frameLen;
    if (n > 1) this.stat[ST_RX_MERGED]!++;
    this.endFrame();
    return RX_DONE;
  }

  /**
   * Gives up the pending frame: completes the RX chains it took with length 0
   * and its TX chain (when it came from TX), counts a drop. Used when rings
   * stop or memory changes; modules call it from ringStopped/memoryChanged.
   */
  abandonRx(): number {
    if (this.srcKind === SRC_NONE) return RX_DROPPED;
    const rx = this.rx;
    if (rx.device !== null) for (let i = 0; i < this.nRx; i++) rx.complete(this.rxChains[i]!, 0);
    this.stat[ST_RX_DROPPED]!++;
    this.endFrame();
    return RX_DROPPED;
  }

  /** Abandons everything in flight (pending frame, held TX chain): for ring stops and memory changes. */
  reset(): void {
    this.abandonRx();
    this.completeTx();
  }

  /** Counters as a record with a prefix (`q0.rxPackets`), for module stats. */
  counters(into: Record<string, number>, prefix = `q${this.pair}.`): Record<string, number> {
    into[prefix + 'txPackets'] = this.txPackets;
    into[prefix + 'txBytes'] = this.txBytes;
    into[prefix + 'txErrors'] = this.txErrors;
    into[prefix + 'rxPackets'] = this.rxPackets;
    into[prefix + 'rxBytes'] = this.rxBytes;
    into[prefix + 'rxDropped'] = this.rxDropped;
    into[prefix + 'rxMerged'] = this.rxMerged;
    return into;
  }

  // -------------------------------------------------------------------------

  private setRxHeader(flags: number, csumStart: number, csumOffset: number): void {
    const h = this.rxHdr;
    if (this.rxHdrDirty) {
      for (let i = 0; i < NET_HDR_V1_LEN; i++) h[i] = 0;
      this.rxHdrDirty = false;
    }
    if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && this.guestCsum) {
      this.rxHdrDirty = true;
      h[HDR_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      h[HDR_CSUM_START] = csumStart & 0xff;
      h[HDR_CSUM_START + 1] = csumStart >>> 8;
      h[HDR_CSUM_OFFSET] = csumOffset & 0xff;
      h[HDR_CSUM_OFFSET + 1] = csumOffset >>> 8;
    }
  }

  private beginFrame(len: number): void {
    this.frameLen = len;
    this.rxTotal = this.hdrLen + len;
    this.rxPos = 0;
    this.nRx = 0;
  }

  private endFrame(): void {
    if (this.srcKind === SRC_CHAIN) this.completeTx();
    this.srcKind = SRC_NONE;
    this.prefix = null;
    this.prefixLen = 0;
    this.nRx = 0;
    this.rxPos = 0;
    this.rxTotal = 0;
  }

  /** Copies frame bytes [from, from+len) of the source into chain `c` at writable offset `dstSkip`. */
  private copyFrame(c: Chain, from: number, len: number, dstSkip: number): void {
    let done = 0;
    const p = this.prefix;
    if (p !== null && from < this.prefixLen) {
      const k = Math.min(this.prefixLen - from, len);
      c.write(dstSkip, p, from, k);
      done = k;
    }
    if (done === len) return;
    if (this.srcKind === SRC_CHAIN) this.txChain.copyTo(c, len - done, this.srcSkip + from + done, dstSkip + done);
    else c.write(dstSkip + done, this.srcBuf, this.srcOff + from + done, len - done);
  }

  /** Rare path: more RX chains for a frame than ever before. */
  private growRx(n: number): void {
    while (this.rxChains.length < n) this.rxChains.push(this.ctx.newChain());
    const lens = new Uint32Array(n);
    lens.set(this.rxLens.subarray(0, Math.min(this.rxLens.length, n)));
    this.rxLens = lens;
  }

  /** Rare path: a frame longer than any before (the scratch buffer keeps the new size). */
  private growScratch(n: number): void {
    let size = this.scratch.length;
    while (size < n) size *= 2;
    const s = new Uint8Array(Math.min(size, MAX_FRAME));
    if (this.srcKind === SRC_BUFFER && this.srcBuf === this.scratch) {
      s.set(this.scratch);
      this.srcBuf = s;
    }
    this.scratch = s;
  }
}

defineStatAccessors(NetQueuePair, STAT_SLOTS);

/**
 * Completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) in place: the
 * Internet checksum over frame bytes [csumStart, len) — which include the
 * pseudo-header sum the driver left in the field — stored big-endian at
 * csumStart + csumOffset (0 becomes 0xffff, as Linux does).
 */
export function completeChecksum(buf: Uint8Array, off: number, len: number, csumStart: number, csumOffset: number): void {
  let sum = 0;
  const end = off + len;
  let i = off + csumStart;
  for (; i + 1 < end; i += 2) sum += ((buf[i] as number) << 8) | (buf[i + 1] as number);
  if (i < end) sum += (buf[i] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  let c = ~sum & 0xffff;
  if (c === 0) c = 0xffff;
  const at = off + csumStart + csumOffset;
  buf[at] = c >>> 8;
  buf[at + 1] = c & 0xff;
}
