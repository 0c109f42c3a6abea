/**
 * Loss / duplicate / reorder accounting for one stream of sequence numbers
 * (one transmitting queue). Allocation-free per packet: a sliding bitmap of
 * the last {@link WINDOW} sequence numbers remembers which arrived.
 *
 * Definitions (all counts are per stream):
 * - `unique`: distinct sequence numbers received.
 * - `duplicated`: a sequence number that had already been received (within the window).
 * - `reordered`: a sequence number that arrived after a higher one (a late packet filling a gap).
 * - `late`: older than the window (cannot tell duplicate from reordered); counted apart, never as unique.
 * - `gaps`: sequence numbers below the highest seen that have not arrived (yet).
 * - `lost(sent)`: `sent - unique`, once the stream has drained (the summary also
 *   subtracts frames that arrived corrupted: those count as bad, not lost).
 */
import { defineStatAccessors } from '@vhost-ts/virtio';

/** Sequence numbers remembered behind the highest seen (power of two). */
export const WINDOW = 1 << 16;
const WORDS = WINDOW >>> 5;
const MASK = WINDOW - 1;

// Slots of SequenceTracker.stat.
const SQ_NEXT = 0;
const SQ_UNIQUE = 1;
const SQ_DUPLICATED = 2;
const SQ_REORDERED = 3;
const SQ_LATE = 4;
const SQ_COUNT = 5;
const SQ_SLOTS = { next: SQ_NEXT, unique: SQ_UNIQUE, duplicated: SQ_DUPLICATED, reordered: SQ_REORDERED, late: SQ_LATE };

export class SequenceTracker {
  /** The numbers below, slots SQ_* (the names are accessors over them). */
  readonly stat = new Float64Array(SQ_COUNT);
  /** Next sequence number expected in order (highest seen + 1; 0 before any). */
  declare next: number;
  declare unique: number;
  declare duplicated: number;
  declare reordered: number;
  declare late: number;
  private readonly bits = new Uint32Array(WORDS);

  /** Records one received sequence number. Returns 0 new in order, 1 new after a gap or late-filling, 2 duplicate, 3 too old. */
  record(seq: number): number {
    const st = this.stat;
    const next = st[SQ_NEXT]!;
    if (seq >= next) {
      // Clear the bits of the range the window slides over: (next .. seq], at most WINDOW of them.
      const span = seq - next + 1;
      if (span >= WINDOW) {
        this.bits.fill(0);
      } else {
        for (let s = next; s <= seq; s++) {
          const i = s & MASK;
          this.bits[i >>> 5]! &= ~(1 << (i & 31));
        }
      }
      const i = seq & MASK;
      this.bits[i >>> 5]! |= 1 << (i & 31);
      st[SQ_NEXT] = seq + 1;
      st[SQ_UNIQUE]!++;
      return seq === next ? 0 : 1;
    }
    if (next - seq > WINDOW) {
      st[SQ_LATE]!++;
      return 3;
    }
    const i = seq & MASK;
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    if (this.bits[w]! & bit) {
      st[SQ_DUPLICATED]!++;
      return 2;
    }
    this.bits[w]! |= bit;
    st[SQ_UNIQUE]!++;
    st[SQ_REORDERED]!++;
    return 1;
  }

  /** Sequence numbers below the highest seen that are missing now. */
  get gaps(): number {
    return this.next - this.unique;
  }

  /** Loss once the stream drained, given how many the sender sent. */
  lost(sent: number): number {
    return Math.max(0, sent - this.unique);
  }

  reset(): void {
    this.stat.fill(0);
    this.bits.fill(0);
  }
}
defineStatAccessors(SequenceTracker, SQ_SLOTS);

// Slots of QueueCounters.stat (the traffic loops count there directly).
export const QC_SENT = 0;
export const QC_SENT_BYTES = 1;
export const QC_TX_COMPLETED = 2;
export const QC_RECEIVED = 3;
export const QC_RECEIVED_BYTES = 4;
export const QC_BAD = 5;
export const QC_FOREIGN = 6;
export const QC_FOREIGN_BAD = 7;
export const QC_BAD_QUEUE = 8;
export const QC_CROSS_PAIR = 9;
export const QC_TRUNCATED = 10;
export const QC_KICKS = 11;
export const QC_CALLS = 12;
export const QC_KICKS_SUPPRESSED = 13;
export const QC_MERGED = 14;
export const QC_MAC_SWAPPED = 15;
export const QC_WINDOW_RESETS = 16;
const QC_COUNT = 17;
const QC_SLOTS = {
  sent: QC_SENT,
  sentBytes: QC_SENT_BYTES,
  txCompleted: QC_TX_COMPLETED,
  received: QC_RECEIVED,
  receivedBytes: QC_RECEIVED_BYTES,
  bad: QC_BAD,
  foreign: QC_FOREIGN,
  foreignBad: QC_FOREIGN_BAD,
  badQueue: QC_BAD_QUEUE,
  crossPair: QC_CROSS_PAIR,
  truncated: QC_TRUNCATED,
  kicks: QC_KICKS,
  calls: QC_CALLS,
  kicksSuppressed: QC_KICKS_SUPPRESSED,
  merged: QC_MERGED,
  macSwapped: QC_MAC_SWAPPED,
  windowResets: QC_WINDOW_RESETS,
};

/** The numbers of a {@link QueueCounters} as a plain object (what a worker thread posts). */
export type QueueCounterValues = { [K in keyof typeof QC_SLOTS]: number };

/** Per-queue counters the traffic loops keep (read by the reporter). */
export class QueueCounters implements QueueCounterValues {
  /** The counters, slots QC_* (the names below are accessors over them). */
  readonly stat = new Float64Array(QC_COUNT);
  /** Frames handed to the back-end on this queue's TX ring (made available); also the next frame's sequence number. */
  declare sent: number;
  declare sentBytes: number;
  /** TX chains the back-end returned (used). */
  declare txCompleted: number;
  /** Frames taken from this queue's RX ring. */
  declare received: number;
  declare receivedBytes: number;
  /** Frames that were ours but corrupted (bad length or content). */
  declare bad: number;
  /** Frames that were not ours (e.g. testpmd's txonly UDP frames). */
  declare foreign: number;
  /** Foreign IPv4 frames whose IP header checksum was wrong. */
  declare foreignBad: number;
  /** Frames claiming a queue id we never transmitted on. */
  declare badQueue: number;
  /** Good frames that came back on another pair than the one that sent them. */
  declare crossPair: number;
  /** RX frames dropped because they did not fit (no mergeable buffers and too long). */
  declare truncated: number;
  /** Notifications we sent (kicks) and received (calls). */
  declare kicks: number;
  declare calls: number;
  /** Kicks suppressed by the back-end's NO_NOTIFY / event index. */
  declare kicksSuppressed: number;
  /** Frames spread over more than one RX buffer (mergeable). */
  declare merged: number;
  /** Good probe frames whose MAC addresses came back swapped (DPDK macswap) instead of as sent. */
  declare macSwapped: number;
  /** loop: times a stalled full window was reopened by writing off the missing frames. */
  declare windowResets: number;

  /** The counters as a plain object (a spread or structured clone of this one holds only `stat`). */
  toJSON(): QueueCounterValues {
    const out = {} as QueueCounterValues;
    for (const [name, slot] of Object.entries(QC_SLOTS)) out[name as keyof QueueCounterValues] = this.stat[slot]!;
    return out;
  }
}
defineStatAccessors(QueueCounters, QC_SLOTS);

/** The summary one run prints (also per queue). */
export interface TrafficSummary {
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  late: number;
  bad: number;
  foreign: number;
  foreignBad: number;
  truncated: number;
  sentBytes: number;
  receivedBytes: number;
  /** loop: times a stalled window was reopened (frames written off as lost). */
  windowResets: number;
  /** Frames that came back on another pair than the one that sent them. */
  crossPair: number;
}

/**
 * Combines per-pair counters and per-stream trackers into the summary.
 * `counters[i]` holds what a queue pair sent and received, `trackers[i]` what
 * was received *from* that pair's TX queue (by the queue id in the frames).
 * `expectOurs`: when false (testpmd transmits), loss is not computed from sequence numbers.
 */
/** What summarize() needs of a stream's tracker (a SequenceTracker, or its numbers sent from a worker). */
export interface StreamStats {
  unique: number;
  duplicated: number;
  reordered: number;
  late: number;
}

/** The plain numbers of a tracker (structured-clone friendly). */
export function streamStats(t: SequenceTracker): StreamStats {
  return { unique: t.unique, duplicated: t.duplicated, reordered: t.reordered, late: t.late };
}

export function summarize(
  counters: readonly QueueCounterValues[],
  trackers: readonly (StreamStats | undefined)[],
  expectOurs: boolean,
): TrafficSummary & { queues: TrafficSummary[] } {
  const queues: TrafficSummary[] = [];
  const total: TrafficSummary = {
    sent: 0, received: 0, lost: 0, duplicated: 0, reordered: 0, late: 0, bad: 0,
    foreign: 0, foreignBad: 0, truncated: 0, sentBytes: 0, receivedBytes: 0, windowResets: 0, crossPair: 0,
  };
  for (let q = 0; q < counters.length; q++) {
    const c = counters[q]!;
    const t = trackers[q];
    const s: TrafficSummary = {
      sent: c.sent,
      received: c.received,
      // Loss is per transmitting stream: what queue q sent minus the distinct frames of stream q that came back,
      // minus the corrupted frames received on pair q (they arrived: counted as bad, not as lost).
      lost: expectOurs && t ? Math.max(0, c.sent - t.unique - c.bad) : 0,
      duplicated: t?.duplicated ?? 0,
      reordered: t?.reordered ?? 0,
      late: t?.late ?? 0,
      bad: c.bad + c.badQueue,
      foreign: c.foreign,
      foreignBad: c.foreignBad,
      truncated: c.truncated,
      sentBytes: c.sentBytes,
      receivedBytes: c.receivedBytes,
      windowResets: c.windowResets,
      crossPair: c.crossPair,
    };
    queues.push(s);
    for (const k of Object.keys(total) as (keyof TrafficSummary)[]) total[k] += s[k];
  }
  return { ...total, queues };
}
