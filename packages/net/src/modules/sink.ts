/**
 * `sink`: counts every frame the guest sends and drops it. The guest's RX
 * buffers stay posted (nothing is ever received).
 */
import { defineModule } from '@vhost-ts/workers/module-api';
import { NetQueuePair } from '../datapath.js';
import { announceRpc, pairHooks } from '../module-kit.js';

export default defineModule((ctx) => {
  const pairs = NetQueuePair.fromContext(ctx);
  return {
    poll() {
      let work = 0;
      for (let i = 0; i < pairs.length; i++) {
        const p = pairs[i]!;
        if (p.rxBusy) p.rxPump(); // only an announcement can be pending
        for (let k = 0; k < 64 && p.popTx(); k++) {
          p.completeTx();
          work++;
        }
      }
      return work;
    },
    ...pairHooks(pairs),
    rpc: { announce: announceRpc(ctx, pairs) },
  };
});
