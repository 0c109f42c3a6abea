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
import { NetTraffic, openNetDevice, type FrontendDevice } from '@vhost-ts/frontend';

/** Seconds of traffic per case. */
const SECS = 1.5;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const avail = isTestpmdAvailable();

for (const pairs of [1, 2]) {
  describe(`DPDK vhost PMD back-end, ${pairs} queue pair(s)`, () => {
    let tp: Testpmd | undefined;
    let release: (() => Promise<void>) | undefined;
    let dir = '';
    let affinity: number[] = [];
    const devices: FrontendDevice[] = [];

    beforeAll(async () => {
      expect(avail.ok, avail.ok ? '' : `dpdk-testpmd is needed (apt-get install dpdk-dev): ${avail.reason}`).toBe(true);
      release = await acquirePeerLock();
      dir = await makeTempDir('fe-dpdk');
      tp = await Testpmd.start({ role: 'backend', socketPath: socketPath(dir, `vhost${pairs}.sock`), queues: pairs, autoStart: false, forwardMode: 'rxonly', txpkts: 64 });
      // testpmd forwards on CPU 1 (its main lcore sleeps on CPU 0): keep our thread on CPU 0.
      affinity = native.getAffinity();
      if (affinity.includes(0) && affinity.length > 1) native.setAffinity([0]);
    }, 120_000);

    afterAll(async () => {
      for (const d of devices.splice(0)) await d.close({ graceful: false });
      if (affinity.length > 0) native.setAffinity(affinity);
      await tp?.close();
      await removeDir(dir);
      await release?.();
    }, 60_000);

    async function open(packed: boolean): Promise<FrontendDevice> {
      const dev = await openNetDevice({ socketPath: tp!.socketPath, queuePairs: pairs, packed, timeoutMs: 5000 });
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
        const r = await t.run(SECS, 2000);
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
          const t = new NetTraffic(dev, { mode: 'loop', frameSize: size });
          const r = await t.run(SECS, 2000);
          await close(dev);
          const fwd = await tp!.stop();
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
  });
}
