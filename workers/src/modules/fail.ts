/**
 * `fail` (test module): completes chains like `sink`, but throws when the
 * first device-readable byte of a chain equals the marker, so tests can break
 * a device on demand.
 *
 * Options: `marker` — byte value (default 255).
 */
import { defineModule } from '../module-api.js';

export default defineModule((ctx) => {
  const marker = Number(ctx.options.marker ?? 255);
  const first = new Uint8Array(1);
  let completed = 0;
  return {
    process(burst) {
      for (let i = 0; i < burst.count; i++) {
        const c = burst.chains[i]!;
        if (c.read(0, first, 0, 1) === 1 && first[0] === marker) {
          throw new Error(`fail module: marker ${marker} in chain ${c.head} of vring ${burst.ring.index}`);
        }
        burst.ring.complete(c, 0);
        completed++;
      }
    },
    stats: () => ({ completed }),
  };
});
