/**
 * Worker-thread entry of ParallelNetTraffic: rebuilds guest memory and the
 * driver-side rings of its queue pairs from the init data, runs the traffic
 * loop on them, reports progress and the per-pair outcome, then closes its
 * pollers (the fds stay with the main thread's device).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory, PackedDriverRing, SplitDriverRing, type DriverRing } from '@vhost-ts/virtio';
import type { Poller } from '@vhost-ts/native';
import { POLL_READABLE } from '@vhost-ts/native';
import { native } from '../native.js';
import { streamStats } from './accounting.js';
import type { NetPairOutcome, NetWorkerInit, NetWorkerMessage } from './parallel.js';
import { NetTraffic, type NetVringView } from './traffic.js';

const init = workerData as NetWorkerInit;
const port = parentPort!;
const post = (m: NetWorkerMessage): void => port.postMessage(m);
const pollers: Poller[] = [];
const cleanup: (() => void)[] = [];

async function main(): Promise<void> {
  if (init.cpus.length > 0) native.setAffinity(init.cpus);
  const memory = new GuestMemory(init.regions);
  const vrings = new Map<number, NetVringView>();
  for (const v of init.vrings) {
    // The main thread set the rings up and never used them: a fresh driver state over the same memory.
    let ring: DriverRing<number>;
    if (v.kind === 'packed') {
      ring = new PackedDriverRing<number>(memory, { size: v.size, descGpa: v.descGpa, driverEventGpa: v.driverGpa, deviceEventGpa: v.deviceGpa, eventIdx: v.eventIdx }, { initialize: false, indirectPool: v.indirectPool, inOrder: v.inOrder });
    } else {
      ring = new SplitDriverRing<number>(memory, { size: v.size, descGpa: v.descGpa, availGpa: v.driverGpa, usedGpa: v.deviceGpa, eventIdx: v.eventIdx }, { initialize: false, indirectPool: v.indirectPool, inOrder: v.inOrder });
    }
    vrings.set(v.index, { index: v.index, size: v.size, ring, kickFd: v.kickFd, callFd: v.callFd, indirect: v.indirectPool !== null });
  }
  const t = new NetTraffic(
    {
      features: BigInt(init.features),
      queuePairs: init.queuePairs,
      pairs: init.pairs,
      vring: (i) => {
        const v = vrings.get(i);
        if (v === undefined) throw new RangeError(`vring ${i} is not this worker's`);
        return v;
      },
      locate: (gpa, len) => {
        const i = memory.translate(gpa, len);
        if (i < 0) throw new RangeError(`[${gpa}, +${len}) is not inside one guest memory region`);
        const region = memory.regions[i]!;
        return { region, offset: gpa - region.gpa };
      },
      pool: (q, which) => {
        const gpa = init.pools[`${q}:${which}`];
        if (gpa === undefined) throw new RangeError(`no ${which} pool for pair ${q}`);
        return gpa;
      },
      watchCalls: (i, onCall) => {
        const p = new native.Poller(vrings.get(i)!.callFd, (events, value) => {
          if (events >= 0) onCall(value);
        }, true);
        p.start(POLL_READABLE);
        pollers.push(p);
      },
    },
    init.options,
  );
  const onMessage = (m: unknown): void => {
    if (m === 'stop') t.stop();
  };
  port.on('message', onMessage);
  cleanup.push(() => port.off('message', onMessage));
  const tick = init.intervalMs > 0 ? { intervalMs: init.intervalMs, onTick: () => post({ type: 'progress', queues: t.progress().queues }) } : undefined;
  const r = await t.run(init.seconds, init.drainMs, tick);
  const pairs: NetPairOutcome[] = t.pairs.map((p) => ({ q: p.q, counters: p.counters.toJSON(), stream: streamStats(t.trackers[p.q]!) }));
  post({ type: 'result', pairs, seconds: r.seconds });
}

main()
  .catch((e: unknown) => post({ type: 'error', message: (e as Error).stack ?? String(e) }))
  .finally(() => {
    // Nothing may keep this thread's loop alive now: it ends, and the worker exits.
    for (const p of pollers.splice(0)) p.close();
    for (const c of cleanup.splice(0)) c();
  });
