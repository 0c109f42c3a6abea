/**
 * Our front-end (@vhost-ts/frontend) against a real vhost-user back-end:
 * DPDK's vhost PMD (`dpdk-testpmd --no-pci --no-huge --vdev net_vhost0,...`,
 * Debian's dpdk-dev). Split and packed rings, 1 and 2 queue pairs:
 * - tx: we transmit, testpmd (rxonly) counts exactly what we sent;
 * - rx: testpmd (txonly) transmits, we receive exactly what it counted as sent;
 * - macswap / io: a round trip with content checks, nothing lost, duplicated or corrupted.
 * One testpmd per queue count serves every case (its forward mode is switched
 * between cases and our front-end reconnects); testpmd is always killed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { acquirePeerLock, isTestpmdAvailable, makeTempDir, removeDir, socketPath, Testpmd } from '@vhost-ts/peers';
import { NetTraffic, ParallelNetTraffic, openNetDevice, type FrontendDevice } from '@vhost-ts/frontend';
import { countResources } from './support/leaks.js';

/** Seconds of traffic per case. */
const SECS = 1.5;
/**
 * Loop cases: never write a stalled window off as lost (a loaded 2-core machine can starve
 * testpmd for a second); frames still missing after the drain are then real losses.
 */
const LOOP = { windowStallMs: 60_000 } as const;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const avail = isTestpmdAvailable();

// One hold of the cross-process peer lock for the whole file: busy-polling testpmds must not
// overlap other CPU-heavy real-peer tests on 2 cores. Waiting for it can take a while.
let releaseLock: (() => Promise<void>) | undefined;
beforeAll(async () => {
  expect(avail.ok, avail.ok ? '' : `dpdk-testpmd is needed (apt-get install dpdk-dev): ${avail.reason}`).toBe(true);
  releaseLock = await acquirePeerLock();
}, 660_000);
afterAll(async () => {
  await releaseLock?.();
});

for (const pairs of [1, 2]) {
  describe(`DPDK vhost PMD back-end, ${pairs} queue pair(s)`, () => {
    let tp: Testpmd | undefined;
    let dir = '';
    let affinity: number[] = [];
    let baseline = { fds: 0, mappings: 0 };
    const devices: FrontendDevice[] = [];

    beforeAll(async () => {
      dir = await makeTempDir('fe-dpdk');
      // Forwarding lcore on CPU 1, explicitly (the harness's default derives it from our affinity).
      tp = await Testpmd.start({ role: 'backend', socketPath: socketPath(dir, `vhost${pairs}.sock`), queues: pairs, autoStart: false, forwardMode: 'rxonly', txpkts: 64, lcores: '0@0,1@1' });
      // testpmd forwards on CPU 1 (its main lcore sleeps on CPU 0): keep our thread on CPU 0.
      affinity = native.getAffinity();
      if (affinity.includes(0) && affinity.length > 1) native.setAffinity([0]);
      baseline = { fds: countResources().fds, mappings: native.liveMappings() };
    }, 120_000);

    afterAll(async () => {
      for (const d of devices.splice(0)) await d.close({ graceful: false });
      if (affinity.length > 0) native.setAffinity(affinity);
      await tp?.close();
      await removeDir(dir);
    }, 60_000);

    async function open(packed: boolean, extra: Partial<Parameters<typeof openNetDevice>[0]> = {}): Promise<FrontendDevice> {
      const dev = await openNetDevice({ socketPath: tp!.socketPath, queuePairs: pairs, packed, timeoutMs: 5000, ...extra });
      devices.push(dev);
      return dev;
    }
    async function close(dev: FrontendDevice): Promise<void> {
      const stop = await dev.close();
      devices.splice(devices.indexOf(dev), 1);
      expect(stop?.bases).toHaveLength(2 * pairs);
    }

    for (const packed of [false, true]) {
      const ring = packed ? 'packed' : 'split';

      it(`${ring}: we transmit, testpmd rxonly counts every frame`, async () => {
        await tp!.setForwardMode('rxonly');
        await tp!.start();
        const dev = await open(packed);
        expect((dev.features >> 34n) & 1n).toBe(packed ? 1n : 0n);
        const t = new NetTraffic(dev, { mode: 'tx', frameSize: 64 });
        const r = await t.run(SECS, 5000);
        for (const p of t.pairs) expect(p.counters.txCompleted).toBe(p.counters.sent);
        await close(dev);
        const fwd = await tp!.stop();
        expect(r.sent).toBeGreaterThan(1000);
        for (const q of r.queues) expect(q.sent).toBeGreaterThan(0);
        expect(fwd.total.rxPackets).toBe(r.sent);
        expect(fwd.total.txPackets).toBe(0);
      });

      it(`${ring}: testpmd txonly transmits, we receive exactly what it sent, well formed`, async () => {
        await tp!.setForwardMode('txonly');
        const dev = await open(packed);
        const t = new NetTraffic(dev, { mode: 'rx', frameSize: 64 });
        const run = t.run(60, 0);
        await tp!.start();
        await sleep(SECS * 1000);
        // Stop the sender first, let us drain what it enqueued, then stop receiving.
        const fwd = await tp!.stop();
        await sleep(300);
        t.stop();
        const r = await run;
        await close(dev);
        expect(fwd.total.txPackets).toBeGreaterThan(1000);
        expect(r.received).toBe(fwd.total.txPackets);
        // testpmd's txonly frames are IPv4/UDP: foreign to our probe format, with valid IP checksums.
        expect(r).toMatchObject({ foreign: r.received, foreignBad: 0, bad: 0, truncated: 0 });
        expect(r.receivedBytes).toBe(r.received * 64);
        for (const q of r.queues) expect(q.received).toBeGreaterThan(0);
      });

      for (const mode of ['macswap', 'io'] as const) {
        it(`${ring}: ${mode} round trip, content checked, nothing lost, duplicated or corrupted`, async () => {
          await tp!.setForwardMode(mode);
          await tp!.start();
          const dev = await open(packed);
          const size = mode === 'io' ? 1500 : 64;
          const t = new NetTraffic(dev, { mode: 'loop', frameSize: size, ...LOOP });
          const r = await t.run(SECS, 5000);
          await close(dev);
          const fwd = await tp!.stop();
          expect(fwd.total.txDropped, 'testpmd could not give frames back (our RX ring was full)').toBe(0);
          expect(r.sent).toBeGreaterThan(1000);
          expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0, foreign: 0, late: 0 });
          expect(r.receivedBytes).toBe(r.sent * size);
          for (const q of r.queues) expect(q.received).toBe(q.sent);
          const swapped = t.pairs.reduce((a, p) => a + p.counters.macSwapped, 0);
          expect(swapped).toBe(mode === 'macswap' ? r.received : 0);
          expect(fwd.total.rxPackets).toBe(r.sent);
          expect(fwd.total.txPackets).toBe(r.sent);
        });
      }
    }

    // Guest memory laid out like QEMU (GPA 0 and 4 GiB from one memfd with an mmap offset, VAs far
    // from GPAs) and as several memfds with holes: DPDK must translate both address classes.
    for (const [layout, packed] of [['qemu', true], ['multi', false]] as const) {
      it(`${packed ? 'packed' : 'split'}, ${layout} memory layout: io round trip intact`, async () => {
        await tp!.setForwardMode('io');
        await tp!.start();
        const dev = await open(packed, { layout, regions: 3, memory: 24 << 20 });
        expect(dev.memory.plan.regions.length).toBeGreaterThan(1);
        const t = new NetTraffic(dev, { mode: 'loop', frameSize: 256, ...LOOP });
        const r = await t.run(SECS / 2, 5000);
        await close(dev);
        const fwd = await tp!.stop();
        expect(r.sent).toBeGreaterThan(1000);
        expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0 });
        expect(fwd.total.txPackets).toBe(r.sent);
      });
    }

    if (pairs === 2) {
      it('split: the data path in 2 worker threads (one per pair): macswap round trip intact', async () => {
        await tp!.setForwardMode('macswap');
        await tp!.start();
        const dev = await open(false);
        const t = new ParallelNetTraffic(dev, { mode: 'loop', frameSize: 64, ...LOOP }, { workers: 2, cpus: [0] });
        const r = await t.run(SECS / 2, 5000);
        await close(dev);
        const fwd = await tp!.stop();
        expect(r.sent).toBeGreaterThan(1000);
        expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0 });
        for (const o of t.outcomes) {
          expect(o.counters.sent).toBeGreaterThan(0);
          expect(o.counters.macSwapped).toBe(o.counters.received);
          expect(o.counters.crossPair).toBe(0);
        }
        expect(fwd.total.txPackets).toBe(r.sent);
      });
    }

    if (pairs === 1) {
      for (const packed of [false, true]) {
        it(`${packed ? 'packed' : 'split'}: EVENT_IDX and indirect descriptors (TX chains header + frame through indirect tables), queue size 1024`, async () => {
          await tp!.setForwardMode('macswap');
          await tp!.start();
          const dev = await open(packed, { eventIdx: true, indirect: true, queueSize: 1024 });
          expect((dev.features >> 28n) & 3n).toBe(3n); // INDIRECT_DESC (28) and EVENT_IDX (29)
          const t = new NetTraffic(dev, { mode: 'loop', frameSize: 128, indirectTx: true, ...LOOP });
          const r = await t.run(SECS / 2, 5000);
          await close(dev);
          await tp!.stop();
          expect(r.sent).toBeGreaterThan(1000);
          expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0 });
        });
      }

      it('split: 5000-byte frames come back over mergeable RX buffers (num_buffers > 1), intact', async () => {
        await tp!.setForwardMode('io');
        await tp!.start();
        const dev = await open(false);
        expect((dev.features >> 15n) & 1n).toBe(1n);
        const t = new NetTraffic(dev, { mode: 'loop', frameSize: 5000, ...LOOP });
        const r = await t.run(SECS / 2, 5000);
        await close(dev);
        await tp!.stop();
        expect(r.sent).toBeGreaterThan(500);
        expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0, truncated: 0 });
        expect(t.pairs[0]!.counters.merged).toBe(r.received);
      });
    }

    it('after every case: no fd and no guest-memory mapping left behind', () => {
      expect(devices).toHaveLength(0);
      expect(countResources().fds).toBe(baseline.fds);
      expect(native.liveMappings()).toBe(baseline.mappings);
    });
  });
}

describe('DPDK vhost PMD in client mode (client=1), our front-end listening (--server)', () => {
  it('accepts the back-end and round-trips through macswap', async () => {
    const dir = await makeTempDir('fe-dpdk-srv');
    const sock = socketPath(dir, 'server.sock');
    let tp: Testpmd | undefined;
    let dev: FrontendDevice | undefined;
    const affinity = native.getAffinity();
    try {
      let listening!: () => void;
      const isListening = new Promise<void>((r) => (listening = r));
      const devP = openNetDevice({ socketPath: sock, server: true, onListening: listening, timeoutMs: 30_000 });
      await isListening;
      tp = await Testpmd.start({ role: 'backend', socketPath: sock, client: true, forwardMode: 'macswap', lcores: '0@0,1@1' });
      dev = await devP;
      if (affinity.includes(0) && affinity.length > 1) native.setAffinity([0]);
      const t = new NetTraffic(dev, { mode: 'loop', frameSize: 64, ...LOOP });
      const r = await t.run(SECS / 2, 5000);
      expect(r.sent).toBeGreaterThan(1000);
      expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, bad: 0 });
      expect(t.pairs[0]!.counters.macSwapped).toBe(r.received);
    } finally {
      native.setAffinity(affinity);
      await dev?.close();
      await tp?.close();
      await removeDir(dir);
    }
  }, 60_000);
});
