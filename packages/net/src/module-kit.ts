/**
 * Small pieces every shipped net module shares: the lifecycle hooks that keep
 * the queue pairs consistent (features, memory swaps, ring stops), statistics,
 * and the `announce` RPC the driver calls on SEND_RARP.
 */
import type { QueueContext, QueueModule, QueueRing } from '@vhost-ts/workers/module-api';
import { NetQueuePair, RX_DROPPED } from './datapath.js';
import { writeRarpAnnouncement, ETH_MIN_FRAME } from './packet/rarp.js';

/** Statistic names every net module reports (summed over its queue pairs), plus `q<i>.<name>` per pair. */
export const NET_STAT_NAMES = ['txPackets', 'txBytes', 'txErrors', 'rxPackets', 'rxBytes', 'rxDropped', 'rxMerged'] as const;

/**
 * Hooks for a module built on {@link NetQueuePair}s: re-read features, abandon
 * frames in flight when a ring stops or the memory table changes (their chains
 * point into the old mappings), and report the pairs' counters.
 * `extraStats` adds module-specific counters.
 */
export function pairHooks(
  pairs: readonly NetQueuePair[],
  extraStats?: (out: Record<string, number>) => void,
): Required<Pick<QueueModule, 'featuresChanged' | 'memoryChanged' | 'ringStopped' | 'ringStarted' | 'stats'>> {
  const owns = (p: NetQueuePair, r: QueueRing): boolean => p.rx === r || p.tx === r;
  return {
    featuresChanged(features) {
      for (const p of pairs) p.featuresChanged(features);
    },
    memoryChanged() {
      for (const p of pairs) p.reset();
    },
    ringStopped(ring) {
      for (const p of pairs) if (owns(p, ring)) p.reset();
    },
    ringStarted(ring) {
      for (const p of pairs) if (owns(p, ring)) p.reset();
    },
    stats() {
      const out: Record<string, number> = {};
      for (const n of NET_STAT_NAMES) out[n] = 0;
      for (const p of pairs) {
        for (const n of NET_STAT_NAMES) out[n]! += p[n];
        p.counters(out);
      }
      extraStats?.(out);
      return out;
    },
  };
}

/**
 * The `announce(mac)` RPC (SEND_RARP after a live migration): injects a
 * gratuitous RARP for `mac` into the RX ring of the first queue pair, as if
 * the network had broadcast it. Returns false when it was dropped (no pair,
 * a frame pending, or no RX buffer).
 */
export function announceRpc(ctx: QueueContext, pairs: readonly NetQueuePair[]): (mac: ArrayLike<number>) => boolean {
  const frame = new Uint8Array(ETH_MIN_FRAME);
  return (mac) => {
    const p = pairs[0];
    if (p === undefined || p.rxBusy) {
      if (p !== undefined) p.rxDropped++;
      return false;
    }
    writeRarpAnnouncement(frame, 0, Uint8Array.from(mac));
    const r = p.rxTryBuffer(frame, 0, frame.length);
    if (r === RX_DROPPED) ctx.log.warn(`announce: RARP for queue pair ${p.pair} dropped (no RX buffer)`);
    else ctx.wake();
    return r !== RX_DROPPED;
  };
}
