/**
 * `responder`: answers ARP requests and ICMP echo requests for one IPv4
 * address, so a guest can `ping` the back-end; drops and counts everything
 * else. Options: `ip=A.B.C.D` (required), `mac=xx:xx:xx:xx:xx:xx` (the
 * address we answer from; default 02:76:68:74:73:01).
 */
import { defineModule } from '@vhost-ts/workers/module-api';
import { NetQueuePair, RX_PENDING } from '../datapath.js';
import { announceRpc, pairHooks } from '../module-kit.js';
import { parseMac } from '../packet/ethernet.js';
import { parseIpv4 } from '../packet/ipv4.js';
import { RESPOND_ARP, RESPOND_NONE, respondInPlace } from '../packet/responder.js';

export const DEFAULT_RESPONDER_MAC = '02:76:68:74:73:01';

export default defineModule((ctx) => {
  if (ctx.options.ip === undefined) throw new Error('responder: option ip=A.B.C.D is required');
  const ip = parseIpv4(ctx.options.ip);
  const mac = parseMac(ctx.options.mac ?? DEFAULT_RESPONDER_MAC);
  const pairs = NetQueuePair.fromContext(ctx);
  let arpReplies = 0;
  let icmpReplies = 0;
  let ignored = 0;
  return {
    poll() {
      let work = 0;
      for (let i = 0; i < pairs.length; i++) {
        const p = pairs[i]!;
        // A reply waiting for RX buffers holds the pair's scratch frame.
        if (p.rxBusy && p.rxPump() === RX_PENDING) continue;
        for (let k = 0; k < 64 && p.popTx(); k++) {
          work++;
          const n = p.readTxFrame();
          p.completeTx();
          const what = respondInPlace(p.scratch, 0, n, ip, mac);
          if (what === RESPOND_NONE) {
            ignored++;
            continue;
          }
          if (what === RESPOND_ARP) arpReplies++;
          else icmpReplies++;
          if (p.rxFromBuffer(p.scratch, 0, n) === RX_PENDING) break;
        }
        p.publishTx(); // TX completions become visible before the replies on RX
      }
      return work;
    },
    ...pairHooks(pairs, (out) => {
      out.arpReplies = arpReplies;
      out.icmpReplies = icmpReplies;
      out.ignored = ignored;
    }),
    rpc: { announce: announceRpc(ctx, pairs) },
  };
});
