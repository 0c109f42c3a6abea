/**
 * `echo`: every frame the guest sends on TX (vring 2i+1) comes back on RX
 * (vring 2i) of the same queue pair, copied guest memory to guest memory.
 * Run with queuesPerWorker = 2 (one queue pair per worker) or any even number.
 *
 * Backpressure instead of loss: a TX chain is popped only while the RX ring
 * has a buffer, and a frame that needs more RX buffers than are posted waits
 * for them. Options: `burst` — frames per pair per round (default 64).
 */
import { defineModule } from '@vhost-ts/workers/module-api';
import { NetQueuePair, RX_PENDING } from '../datapath.js';
import { announceRpc, pairHooks } from '../module-kit.js';

export default defineModule((ctx) => {
  const pairs = NetQueuePair.fromContext(ctx);
  const burst = Number(ctx.options.burst ?? 64);
  return {
    poll() {
      let work = 0;
      for (let i = 0; i < pairs.length; i++) {
        const p = pairs[i]!;
        if (p.rxBusy) {
          if (p.rxPump() === RX_PENDING) continue; // still waiting for RX buffers
          work++;
        }
        // RX buffers posted, read once per burst (an Atomics.load of a word the
        // guest's core keeps writing) and again only when the count runs out. A
        // frame needing more buffers than counted waits as a pending frame.
        let room = p.rx.available();
        for (let k = 0; k < burst; k++) {
          if ((room === 0 && (room = p.rx.available()) === 0) || !p.popTx()) break;
          work++;
          room--;
          if (p.rxFromTx() === RX_PENDING) break;
        }
        p.publishTx(); // TX completions become visible before the frames on RX
      }
      return work;
    },
    ...pairHooks(pairs),
    rpc: { announce: announceRpc(ctx, pairs) },
  };
});
