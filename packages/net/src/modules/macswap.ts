/**
 * `macswap`: echo with the Ethernet destination and source addresses swapped,
 * like testpmd's macswap forwarding mode. The swapped addresses are written
 * as a 12-byte prefix while the rest of the frame is copied guest to guest.
 * Options: `burst` (default 64).
 */
import { defineModule } from '@vhost-ts/workers/module-api';
import { NetQueuePair, RX_PENDING } from '../datapath.js';
import { announceRpc, pairHooks } from '../module-kit.js';
import { swapMacs } from '../packet/ethernet.js';

export default defineModule((ctx) => {
  const pairs = NetQueuePair.fromContext(ctx);
  const burst = Number(ctx.options.burst ?? 64);
  // One prefix per pair: it must stay unchanged while that pair's frame is pending.
  const prefixes = pairs.map(() => new Uint8Array(12));
  return {
    poll() {
      let work = 0;
      for (let i = 0; i < pairs.length; i++) {
        const p = pairs[i]!;
        const prefix = prefixes[i]!;
        if (p.rxBusy) {
          if (p.rxPump() === RX_PENDING) continue;
          work++;
        }
        let room = p.rx.available(); // once per burst, as in echo
        for (let k = 0; k < burst; k++) {
          if ((room === 0 && (room = p.rx.available()) === 0) || !p.popTx()) break;
          work++;
          room--;
          p.readTx(0, prefix, 0, 12);
          swapMacs(prefix, 0);
          if (p.rxFromTx(prefix, 12) === RX_PENDING) break;
        }
        p.publishTx(); // TX completions become visible before the frames on RX
      }
      return work;
    },
    ...pairHooks(pairs),
    rpc: { announce: announceRpc(ctx, pairs) },
  };
});
