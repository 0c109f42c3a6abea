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

// Slots of the module's counters (`stat`).
const RS_ARP_REPLIES = 0;
const RS_ICMP_REPLIES = 1;
const RS_IGNORED = 2;
const RS_COUNT = 3;

export default defineModule((ctx) => {
  if (ctx.options.ip === undefined) throw new Error('responder: option ip=A.B.C.D is required');
  const ip = parseIpv4(ctx.options.ip);
  const mac = parseMac(ctx.options.mac ?? DEFAULT_RESPONDER_MAC);
  const pairs = NetQueuePair.fromContext(ctx);
  /** The counters, slots RS_*; also on the module object (tests seed them). Not closure numbers: one past 2^30 is a new heap object per increment. */
  const stat = new Float64Array(RS_COUNT);
  return {
    stat,
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
            stat[RS_IGNORED]!++;
            continue;
          }
          stat[what === RESPOND_ARP ? RS_ARP_REPLIES : RS_ICMP_REPLIES]!++;
          if (p.rxFromBuffer(p.scratch, 0, n) === RX_PENDING) break;
        }
        p.publishTx(); // TX completions become visible before the replies on RX
      }
      return work;
    },
    ...pairHooks(pairs, (out) => {
      out.arpReplies = stat[RS_ARP_REPLIES]!;
      out.icmpReplies = stat[RS_ICMP_REPLIES]!;
      out.ignored = stat[RS_IGNORED]!;
    }),
    rpc: { announce: announceRpc(ctx, pairs) },
  };
});
