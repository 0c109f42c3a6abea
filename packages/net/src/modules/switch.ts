/**
 * `switch`: a learning Ethernet switch between several vhost-user ports of one
 * process, so guests on different ports talk through vhost-ts. Each port is
 * its own device and worker; frames cross workers through a
 * {@link SwitchFabric} (one SPSC ring of frame slots per (dst, src) port pair
 * in a SharedArrayBuffer). The main thread attaches the fabric to each port's
 * worker with the `attach(sab, port)` RPC once the device starts.
 *
 * Per worker learning: a worker learns the source address of every frame its
 * guest sends (-> its own port) and of every frame it receives from ring
 * (me, src) (-> port src). Unicast to a known, attached port goes to that
 * port; broadcast, multicast and unknown destinations are flooded to every
 * other attached port; frames for the sender's own port are filtered.
 *
 * One queue pair per port (queue pair 0): further pairs' frames are dropped.
 * A frame whose receiver has no RX buffer waits in its ring (backpressure);
 * a full ring drops new frames (counted by the fabric).
 *
 * The worker runs in event-loop mode: when idle it waits (Atomics.waitAsync)
 * on its port's bell word, which producers ring after each push.
 */
import { defineModule } from '@vhost-ts/workers/module-api';
import { NetQueuePair, RX_PENDING } from '../datapath.js';
import { pairHooks } from '../module-kit.js';
import { ETH_SRC, isMulticastDst, macToNumber } from '../packet/ethernet.js';
import { MacTable } from '../packet/mac-table.js';
import { ETH_MIN_FRAME, writeRarpAnnouncement } from '../packet/rarp.js';
import { SLOT_DATA, SwitchFabric } from '../switch-fabric.js';

// Slots of the module's counters (`stat`).
const SW_FORWARDED = 0;
const SW_FLOODED = 1;
const SW_FILTERED = 2;
const SW_RING_FULL = 3;
const SW_UNATTACHED_DROPS = 4;
const SW_EXTRA_PAIR_DROPS = 5;
const SW_COUNT = 6;

export default defineModule((ctx) => {
  const pairs = NetQueuePair.fromContext(ctx);
  const p0 = pairs.find((p) => p.pair === 0) ?? null;
  const table = new MacTable(Number(ctx.options.macTableSize ?? 4096), Number(ctx.options.ageMs ?? 300_000));
  const addr = new Uint8Array(12);
  let fabric: SwitchFabric | null = null;
  let me = -1;
  /** Source ring of the frame pending in our RX ring, or -1. */
  let pendingSrc = -1;
  let bellSeen = 0;
  let armed = false;
  let closed = false;
  /**
   * The counters, slots SW_*; also on the module object (tests seed them). A Float64Array, not
   * closure variables: a number in a closure that passes 2^30 (V8's small integers) is a new
   * heap object on every increment, garbage per frame after 2^30 frames.
   */
  const stat = new Float64Array(SW_COUNT);

  /** Copies the current TX frame of p0 into ring (dst, me); false when the ring is full. */
  function push(p: NetQueuePair, dst: number): boolean {
    const f = fabric!;
    const slot = f.reserve(dst, me);
    if (slot < 0) {
      stat[SW_RING_FULL]!++;
      return false;
    }
    const len = p.txFrameLen;
    p.readTx(0, f.u8, slot + SLOT_DATA, len);
    f.commit(dst, me, slot, len, p.txFlags, p.txCsumStart, p.txCsumOffset);
    return true;
  }

  /** Pushes buf[0, len) (an announcement) to every other attached port. */
  function floodBuffer(buf: Uint8Array, len: number): void {
    const f = fabric!;
    for (let dst = 0; dst < f.ports; dst++) {
      if (dst === me || !f.isAttached(dst)) continue;
      const slot = f.reserve(dst, me);
      if (slot < 0) {
        stat[SW_RING_FULL]!++;
        continue;
      }
      f.u8.set(buf.subarray(0, len), slot + SLOT_DATA);
      f.commit(dst, me, slot, len);
    }
  }

  /** Forwards the guest's frames (TX of pair 0) into the fabric. */
  function forward(p: NetQueuePair, now: number): number {
    const f = fabric!;
    let work = 0;
    for (let k = 0; k < 64 && p.popTx(); k++) {
      work++;
      const len = p.txFrameLen;
      if (len > f.maxFrame) {
        stat[SW_RING_FULL]!++;
        p.completeTx();
        continue;
      }
      p.readTx(0, addr, 0, 12);
      table.learn(macToNumber(addr, ETH_SRC), me, now);
      let dst = isMulticastDst(addr, 0) ? -1 : table.lookup(macToNumber(addr, 0), now);
      if (dst === me) {
        stat[SW_FILTERED]!++;
      } else if (dst >= 0 && f.isAttached(dst)) {
        if (push(p, dst)) stat[SW_FORWARDED]!++;
      } else {
        dst = -1;
        for (let q = 0; q < f.ports; q++) if (q !== me && f.isAttached(q) && push(p, q)) stat[SW_FLOODED]!++;
      }
      p.completeTx();
    }
    return work;
  }

  /** Delivers frames queued for us into the guest's RX ring of pair 0. */
  function deliver(p: NetQueuePair, now: number): number {
    const f = fabric!;
    let work = 0;
    if (pendingSrc >= 0) {
      if (p.rxPump() === RX_PENDING) return 0;
      f.release(me, pendingSrc);
      pendingSrc = -1;
      work++;
    }
    for (let src = 0; src < f.ports; src++) {
      if (src === me) continue;
      for (let k = 0; k < 64; k++) {
        const slot = f.peek(me, src);
        if (slot < 0) break;
        if (p.rx.available() === 0) return work; // wait in the ring for RX buffers
        const data = slot + SLOT_DATA;
        const len = f.slotLength(slot);
        table.learn(macToNumber(f.u8, data + ETH_SRC), src, now);
        const r = p.rxFromBuffer(f.u8, data, len, f.slotFlags(slot), f.slotCsumStart(slot), f.slotCsumOffset(slot));
        work++;
        if (r === RX_PENDING) {
          pendingSrc = src;
          return work;
        }
        f.release(me, src);
      }
    }
    return work;
  }

  /** Wakes our worker when a producer rings our bell (we may be asleep on our own doorbell). */
  function arm(): void {
    if (armed || closed || fabric === null) return;
    const w = Atomics.waitAsync(fabric.i32, fabric.bellIndex(me), bellSeen);
    if (!w.async) return; // the bell moved since we drained: poll() runs again anyway
    armed = true;
    void w.value.then(() => {
      armed = false;
      ctx.wake();
    });
  }

  // A frame abandoned by a ring stop or memory swap frees its slot in deliver() (rxPump is then not pending).
  const hooks = pairHooks(pairs, (out) => {
    out.port = me;
    out.forwarded = stat[SW_FORWARDED]!;
    out.flooded = stat[SW_FLOODED]!;
    out.filtered = stat[SW_FILTERED]!;
    out.ringFull = stat[SW_RING_FULL]!;
    out.unattachedDrops = stat[SW_UNATTACHED_DROPS]!;
    out.extraPairDrops = stat[SW_EXTRA_PAIR_DROPS]!;
    out.macs = table.size;
  });

  return {
    stat,
    poll() {
      let work = 0;
      for (let i = 0; i < pairs.length; i++) {
        const p = pairs[i]!;
        if (p === p0 && fabric !== null) continue;
        // Not attached yet, or a pair the switch does not serve: drop what the guest sends.
        for (let k = 0; k < 64 && p.popTx(); k++) {
          p.completeTx();
          stat[p === p0 ? SW_UNATTACHED_DROPS : SW_EXTRA_PAIR_DROPS]!++;
          work++;
        }
      }
      if (p0 === null || fabric === null) return work;
      bellSeen = Atomics.load(fabric.i32, fabric.bellIndex(me));
      const now = Date.now();
      work += deliver(p0, now);
      work += forward(p0, now);
      arm();
      return work;
    },
    ...hooks,
    rpc: {
      /** Attaches the fabric: this worker serves port `port`. Frames queued for an earlier guest on the port are dropped. */
      attach(sab: SharedArrayBuffer, port: number): number {
        const f = new SwitchFabric(sab);
        if (!Number.isInteger(port) || port < 0 || port >= f.ports) throw new RangeError(`switch port ${port} outside 0..${f.ports - 1}`);
        fabric = f;
        me = port;
        f.flushInbound(port);
        const gen = f.attach(port);
        ctx.setEventLoop(true);
        ctx.wake();
        return gen;
      },
      /** SEND_RARP: floods a RARP for `mac` to the other ports, as if our guest had sent it. */
      announce(mac: ArrayLike<number>): boolean {
        if (fabric === null) return false;
        const frame = new Uint8Array(ETH_MIN_FRAME);
        writeRarpAnnouncement(frame, 0, Uint8Array.from(mac));
        table.learn(macToNumber(frame, ETH_SRC), me, Date.now());
        floodBuffer(frame, frame.length);
        return true;
      },
    },
    close() {
      closed = true;
      if (fabric !== null && me >= 0) fabric.detach(me);
    },
  };
});
