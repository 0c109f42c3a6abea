/**
 * `sink`: completes every chain with used length 0 and counts what it saw.
 * The smallest useful module (and the benchmark's device side).
 *
 * Options: `writeLen` — bytes reported as written per chain (default 0; capped
 * at the chain's writable bytes; nothing is actually written).
 */
import { defineModule } from '../module-api.js';

export default defineModule((ctx) => {
  const writeLen = Number(ctx.options.writeLen ?? 0);
  let chains = 0;
  let bytes = 0;
  return {
    process(burst) {
      const ring = burst.ring;
      const chainsIn = burst.chains;
      const n = burst.count;
      for (let i = 0; i < n; i++) {
        const c = chainsIn[i]!;
        bytes += c.readableBytes;
        ring.complete(c, writeLen < c.writableBytes ? writeLen : c.writableBytes);
      }
      chains += n;
    },
    stats: () => ({ chains, bytes }),
    rpc: {
      reset: () => {
        chains = 0;
        bytes = 0;
      },
    },
  };
});
