/**
 * `slow` (test module): completes chains like `sink` after burning time, to
 * test control under load and shutdown of a busy worker.
 *
 * Options:
 * - `spinMs`    busy-loop this long per burst (JS: terminate() can interrupt it).
 * - `syscallMs` block this long per burst in a syscall (spawnSync of `sleep`:
 *   terminate() cannot interrupt it; the manager must abandon the worker).
 */
import { spawnSync } from 'node:child_process';
import { defineModule } from '../module-api.js';

export default defineModule((ctx) => {
  const spinMs = Number(ctx.options.spinMs ?? 0);
  const syscallMs = Number(ctx.options.syscallMs ?? 0);
  let bursts = 0;
  return {
    process(burst) {
      bursts++;
      if (spinMs > 0) {
        const end = performance.now() + spinMs;
        while (performance.now() < end) {
          /* burn */
        }
      }
      if (syscallMs > 0) spawnSync('sleep', [String(syscallMs / 1000)]);
      for (let i = 0; i < burst.count; i++) burst.ring.complete(burst.chains[i]!, 0);
    },
    stats: () => ({ bursts }),
  };
});
