/**
 * `vhost-ts net --module=echo` (a child process) under DPDK's virtio-user
 * front-end (`dpdk-testpmd --vdev net_virtio_user0`): testpmd forwards in `io`
 * mode and `start tx_first` seeds the loop, so every frame it sends comes back
 * and is sent again. RX must keep up with TX: nothing lost beyond the frames
 * in flight, no drop on either side, for split and packed rings, mergeable RX
 * buffers on and off, 1 and 2 queue pairs, 64 and 1500-byte frames, and one
 * run with 9000-byte frames (multi-segment mbufs, spread over mergeable RX
 * buffers). Each case is a few seconds of traffic.
 *
 * Pinning (2 cores): the daemon's queue workers on CPU 1, testpmd's
 * forwarding lcore on CPU 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquirePeerLock, isTestpmdAvailable, makeTempDir, removeDir, sleep, socketPath, Testpmd, type TestpmdOptions } from '@vhost-ts/peers';
import { NetDaemon, isCliBuilt } from '../packages/net/test/support/daemon.js';

const hasTestpmd = isTestpmdAvailable().ok && isCliBuilt();
/** Seconds of traffic per case. */
const SECS = 2;
/** testpmd's default burst: tx_first sends this many frames per burst and queue. */
const BURST = 32;

interface Case {
  queues: number;
  packed: boolean;
  mrg: boolean;
  size: number;
}

const cases: Case[] = [];
for (const queues of [1, 2]) {
  for (const packed of [false, true]) {
    for (const mrg of [true, false]) {
      for (const size of [64, 1500]) cases.push({ queues, packed, mrg, size });
    }
  }
}

describe('vhost-ts net --module=echo under dpdk-testpmd io forwarding', () => {
  let release: (() => Promise<void>) | undefined;
  let dir = '';
  const daemons = new Map<number, NetDaemon>();
  const open: Testpmd[] = [];

  beforeAll(async () => {
    if (!hasTestpmd) return;
    release = await acquirePeerLock();
    dir = await makeTempDir('net-dpdk');
  }, 600_000);

  afterAll(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    await Promise.all([...daemons.values()].map((d) => d.close()));
    if (dir !== '') await removeDir(dir);
    await release?.();
  }, 60_000);

  /** One daemon per queue count; testpmd reconnects to it case after case. */
  async function daemonFor(queues: number): Promise<NetDaemon> {
    let d = daemons.get(queues);
    if (d === undefined || !d.running) {
      d = await NetDaemon.start({
        socketPaths: [socketPath(dir, `net${queues}.sock`)],
        args: [`--queues=${queues}`, '--module=echo', '--cpus=1', '--stats-interval=0.5'],
      });
      daemons.set(queues, d);
    }
    return d;
  }

  /**
   * Runs the io loop for SECS seconds and checks the invariants. Returns
   * testpmd's forward statistics.
   */
  async function loop(c: Case & { txFirst: number; segments?: number[]; extra?: Partial<TestpmdOptions> }): Promise<void> {
    const d = await daemonFor(c.queues);
    const since = d.position;
    const tp = await Testpmd.start({
      role: 'frontend',
      socketPath: d.socketPaths[0]!,
      queues: c.queues,
      packedVq: c.packed,
      mrgRxbuf: c.mrg,
      forwardMode: 'io',
      autoStart: false,
      ...(c.segments === undefined ? { txpkts: c.size } : {}),
      ...c.extra,
    });
    open.push(tp);
    try {
      // Multi-segment frames are set at run time: given as --txpkts before the ports exist,
      // testpmd prints a (harmless) "Invalid Tx queue_id" that the harness treats as a rejection.
      if (c.segments !== undefined) {
        const answer = await tp.command(`set txpkts ${c.segments.join(',')}`);
        expect(answer).not.toMatch(/invalid|error|fail/i);
      }
      // The back-end serves the new device (all its queue pairs' workers started).
      await d.waitFor(/device \d+ started/, since);
      await tp.start(c.txFirst);
      const rate = await tp.measureRate(SECS * 1000);
      const trafficFrom = d.position;
      await sleep(600); // at least one statistics line while the loop runs
      const fwd = await tp.stop();
      const afterStop = d.position;
      const stats = await d.nextStats(afterStop);
      const during = d.statsLines(trafficFrom);

      const inFlight = c.txFirst * BURST * c.queues;
      const { rxPackets, txPackets, rxDropped, txDropped } = fwd.total;
      const what = `${JSON.stringify(c)}: testpmd ${JSON.stringify(fwd.total)}, ${Math.round(rate.rxPps)} pps; daemon ${JSON.stringify(stats)}`;
      // The loop ran: frames went around many times.
      expect(rxPackets, what).toBeGreaterThan(20 * inFlight);
      // RX keeps up with TX: what was sent and not received is at most what was in flight.
      expect(txPackets - rxPackets, what).toBeGreaterThanOrEqual(0);
      expect(txPackets - rxPackets, what).toBeLessThanOrEqual(inFlight);
      // Nothing dropped: not by testpmd (TX ring full / RX) and not by the back-end.
      expect(txDropped, what).toBe(0);
      expect(rxDropped, what).toBe(0);
      for (let q = 0; q < c.queues; q++) {
        expect(stats.queues[`q${q}`]?.drops, what).toBe(0);
        // Every queue pair carried traffic.
        expect(during.some((l) => (l.queues[`q${q}`]?.['rx-pps'] ?? 0) > 0), what).toBe(true);
      }
    } finally {
      await tp.close();
      open.splice(open.indexOf(tp), 1);
    }
  }

  for (const c of cases) {
    const name = `${c.queues} queue pair(s), ${c.packed ? 'packed' : 'split'} ring, mergeable ${c.mrg ? 'on' : 'off'}, ${c.size} B`;
    it.skipIf(!hasTestpmd)(`${name}: RX keeps up with TX, nothing dropped (needs dpdk-testpmd)`, async () => {
      await loop({ ...c, txFirst: 4 });
    });
  }

  it.skipIf(!hasTestpmd)('9000-byte frames (5-segment mbufs, spread over mergeable RX buffers): RX keeps up with TX (needs dpdk-testpmd)', async () => {
    // One burst: 32 frames x 6 descriptors fit the 256-entry TX ring.
    await loop({
      queues: 1,
      packed: false,
      mrg: true,
      size: 9000,
      txFirst: 1,
      segments: [2048, 2048, 2048, 2048, 808],
      extra: { maxPktLen: 9018, extraApp: ['--enable-scatter', '--tx-offloads=0x8000'] },
    });
  });

  it.skipIf(!hasTestpmd)('the daemon exits within 2 s of SIGTERM, status 0 (needs dpdk-testpmd)', async () => {
    const d = await daemonFor(1);
    const { status, ms } = await d.stop();
    daemons.delete(1);
    expect(status).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(2000);
  });
});
