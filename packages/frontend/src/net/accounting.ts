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

/** Sequence numbers remembered behind the highest seen (power of two). */
export const WINDOW = 1 << 16;
const WORDS = WINDOW >>> 5;
const MASK = WINDOW - 1;

export class SequenceTracker {
  /** Next sequence number expected in order (highest seen + 1; 0 before any). */
  next = 0;
  unique = 0;
  duplicated = 0;
  reordered = 0;
  late = 0;
  private readonly bits = new Uint32Array(WORDS);

  /** Records one received sequence number. Returns 0 new in order, 1 new after a gap or late-filling, 2 duplicate, 3 too old. */
  record(seq: number): number {
    const next = this.next;
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
      this.next = seq + 1;
      this.unique++;
      return seq === next ? 0 : 1;
    }
    if (next - seq > WINDOW) {
      this.late++;
      return 3;
    }
    const i = seq & MASK;
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    if (this.bits[w]! & bit) {
      this.duplicated++;
      return 2;
    }
    this.bits[w]! |= bit;
    this.unique++;
    this.reordered++;
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
    this.next = 0;
    this.unique = 0;
    this.duplicated = 0;
    this.reordered = 0;
    this.late = 0;
    this.bits.fill(0);
  }
}

/** Per-queue counters the traffic loops keep (plain numbers, read by the reporter). */
export class QueueCounters {
  /** Frames handed to the back-end on this queue's TX ring (made available). */
  sent = 0;
  sentBytes = 0;
  /** TX chains the back-end returned (used). */
  txCompleted = 0;
  /** Frames taken from this queue's RX ring. */
  received = 0;
  receivedBytes = 0;
  /** Frames that were ours but corrupted (bad length or content). */
  bad = 0;
  /** Frames that were not ours (e.g. testpmd's txonly UDP frames). */
  foreign = 0;
  /** Foreign IPv4 frames whose IP header checksum was wrong. */
  foreignBad = 0;
  /** Frames claiming a queue id we never transmitted on. */
  badQueue = 0;
  /** Good frames that came back on another pair than the one that sent them. */
  crossPair = 0;
  /** RX frames dropped because they did not fit (no mergeable buffers and too long). */
  truncated = 0;
  /** Notifications we sent (kicks) and received (calls). */
  kicks = 0;
  calls = 0;
  /** Kicks suppressed by the back-end's NO_NOTIFY / event index. */
  kicksSuppressed = 0;
  /** Frames spread over more than one RX buffer (mergeable). */
  merged = 0;
  /** Good probe frames whose MAC addresses came back swapped (DPDK macswap) instead of as sent. */
  macSwapped = 0;
  /** loop: times a stalled full window was reopened by writing off the missing frames. */
  windowResets = 0;
}

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
  counters: readonly QueueCounters[],
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
