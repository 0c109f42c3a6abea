/**
 * `loopback`: for each queue pair of its group, copies every chain the guest
 * sends on TX (vring 2i+1) into a receive buffer of RX (vring 2i) — a
 * minimal example of a module that takes from one ring of its group and puts
 * into another (the shape of a net echo). Poll mode: the module pops both
 * rings itself, so a TX chain waits (is not popped) while RX has no buffer.
 * Run it with queuesPerWorker = 2 (or any even number).
 *
 * Options: `header` — bytes copied as-is before the payload (none by default;
 * a net device would write a virtio-net header here).
 */
import { defineModule, type QueueRing } from '../module-api.js';

// Slots of the module's counters (`stat`).
const L_PACKETS = 0;
const L_DROPPED = 1;
const L_COUNT = 2;

export default defineModule((ctx) => {
  const pairs: { rx: QueueRing; tx: QueueRing }[] = [];
  for (const r of ctx.rings) {
    if (r.index % 2 !== 0) continue;
    const tx = ctx.ring(r.index + 1);
    if (tx === undefined) continue;
    r.mode = 'manual';
    tx.mode = 'manual';
    pairs.push({ rx: r, tx });
  }
  const rxChain = ctx.newChain();
  const txChain = ctx.newChain();
  /** The counters, slots L_*; also on the module object (tests seed them). Not closure numbers: one past 2^30 is a new heap object per increment. */
  const stat = new Float64Array(L_COUNT);
  return {
    stat,
    poll() {
      let work = 0;
      for (let p = 0; p < pairs.length; p++) {
        const { rx, tx } = pairs[p]!;
        if (!rx.active || !tx.active) continue;
        // Up to one burst per pair per round; stop when RX has no buffer.
        for (let k = 0; k < 64; k++) {
          if (rx.available() === 0) break;
          if (!tx.popInto(txChain)) break;
          if (!rx.popInto(rxChain)) {
            // Cannot happen after available() > 0 unless the guest misbehaves; complete TX anyway.
            tx.complete(txChain, 0);
            stat[L_DROPPED]!++;
            break;
          }
          const n = txChain.copyTo(rxChain, txChain.readableBytes);
          rx.complete(rxChain, n);
          tx.complete(txChain, 0);
          stat[L_PACKETS]!++;
          work++;
        }
      }
      return work;
    },
    stats: () => ({ packets: stat[L_PACKETS]!, dropped: stat[L_DROPPED]! }),
  };
});
