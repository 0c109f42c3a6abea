/**
 * `sink`: completes every chain with used length 0 and counts what it saw.
 * The smallest useful module (and the benchmark's device side).
 *
 * Options: `writeLen` — bytes reported as written per chain (default 0; capped
 * at the chain's writable bytes; nothing is actually written).
 */
import { defineModule } from '../module-api.js';

// Slots of the module's counters (`stat`).
const S_CHAINS = 0;
const S_BYTES = 1;
const S_COUNT = 2;

export default defineModule((ctx) => {
  const writeLen = Number(ctx.options.writeLen ?? 0);
  /**
   * The counters, slots S_*; also on the module object (tests seed them). A Float64Array, not
   * closure variables: a number in a closure that passes 2^30 (V8's small integers) is a new
   * heap object on every increment — the byte count gets there within seconds.
   */
  const stat = new Float64Array(S_COUNT);
  return {
    stat,
    process(burst) {
      const ring = burst.ring;
      const chainsIn = burst.chains;
      const n = burst.count;
      let bytes = 0;
      for (let i = 0; i < n; i++) {
        const c = chainsIn[i]!;
        bytes += c.readableBytes;
        ring.complete(c, writeLen < c.writableBytes ? writeLen : c.writableBytes);
      }
      stat[S_CHAINS]! += n;
      stat[S_BYTES]! += bytes;
    },
    stats: () => ({ chains: stat[S_CHAINS]!, bytes: stat[S_BYTES]! }),
    rpc: {
      reset: () => {
        stat.fill(0);
      },
    },
  };
});
