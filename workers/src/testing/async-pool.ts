/**
 * Test module: completes each chain (used len 0) when a piscina pool task
 * resolves — the shape of a blk module that does file I/O off its queue
 * thread. Allocates a closure per chain: a test fixture, not a fast path.
 *
 * Options: `delayMs` — task duration (default 1).
 */
import { defineModule } from '../module-api.js';

export default defineModule(async (ctx) => {
  const delayMs = Number(ctx.options.delayMs ?? 1);
  const pool = await ctx.createPool({
    filename: new URL('./async-task.js', import.meta.url).href,
    minThreads: 1,
    maxThreads: 1,
    atomics: 'disabled',
  });
  let completed = 0;
  let tasks = 0;
  return {
    process(burst) {
      const ring = burst.ring;
      for (let i = 0; i < burst.count; i++) {
        const c = burst.chains[i]!;
        const head = c.head;
        tasks++;
        void pool.run({ delayMs }).then(
          () => {
            ring.completeId(head, 0);
            completed++;
          },
          (e: unknown) => ctx.log.error(`task failed: ${String(e)}`),
        );
      }
    },
    stats: () => ({ completed, tasks }),
  };
});
