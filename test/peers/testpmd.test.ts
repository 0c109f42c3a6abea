// DPDK's own front-end (net_virtio_user) against DPDK's own back-end (net_vhost): proves the
// testpmd harness (start-up, commands, parsed counters, clean-up) with no vhost-ts code involved.
import { existsSync } from 'node:fs';
import {
  acquirePeerLock,
  dpdkRuntimeDirs,
  isTestpmdAvailable,
  makeTempDir,
  pidAlive,
  removeDir,
  socketPath,
  Testpmd,
} from '@vhost-ts/peers';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const avail = isTestpmdAvailable();

describe('dpdk-testpmd harness against DPDK peers', () => {
  let release: (() => Promise<void>) | undefined;
  let dir = '';
  const open: Testpmd[] = [];
  const start = async (...args: Parameters<typeof Testpmd.start>): Promise<Testpmd> => {
    const t = await Testpmd.start(...args);
    open.push(t);
    return t;
  };

  beforeAll(async () => {
    if (!avail.ok) throw new Error(avail.reason);
    release = await acquirePeerLock();
    dir = await makeTempDir('tp-test');
  }, 600_000);

  afterEach(async () => {
    // Whatever happened in the test: no testpmd survives it.
    await Promise.all(open.splice(0).map((t) => t.close()));
  });

  afterAll(async () => {
    await removeDir(dir);
    await release?.();
  });

  const txCases = [
    { name: '64 B, split ring', size: 64, fe: {}, be: {} },
    {
      name: '9000 B frames, packed ring',
      size: 9000,
      // --mbuf-size large enough for a 9000-byte frame in one mbuf on both sides
      fe: { packedVq: true, maxPktLen: 9018, mbufSize: 10240 },
      be: { maxPktLen: 9018, mbufSize: 10240 },
    },
  ] as const;

  it.each(txCases)('txonly front-end into an rxonly back-end ($name): both sides count the same', async ({ size, fe: feOpts, be: beOpts }) => {
    const sock = socketPath(dir, `tx${size}.sock`);
    const be = await start({ role: 'backend', socketPath: sock, forwardMode: 'rxonly', ...beOpts });
    const fe = await start({ role: 'frontend', socketPath: sock, forwardMode: 'txonly', txpkts: size, ...feOpts });
    expect(fe.output).toContain(`packet len=${size} - nb packet segments=1`);
    await be.waitForLinkUp(0, 10_000);
    const rate = await fe.measureRate(1000);
    expect(rate.txPackets).toBeGreaterThan(0);

    const feNic = await fe.portStat(0);
    expect(feNic.txPackets).toBeGreaterThan(0);
    expect(feNic.rxPackets).toBe(0);

    // Stop the sender first so that the receiver drains everything that was enqueued.
    const feFwd = await fe.stop();
    // Bytes = packets x size only once the sender stopped: virtio-user's counters are bumped by the
    // forwarding lcore one after the other, and a `show port stats` taken while it sends can read
    // one burst's packets without its bytes (seen in CI: 878350400 bytes for 13724224 packets).
    const feNicStopped = await fe.portStat(0);
    expect(feNicStopped.txPackets).toBeGreaterThanOrEqual(feNic.txPackets);
    expect(feNicStopped.txBytes).toBe(feNicStopped.txPackets * size);
    await new Promise((r) => setTimeout(r, 200));
    const beFwd = await be.stop();
    const beNic = await be.portStat(0);

    const sent = feFwd.total.txPackets;
    expect(sent).toBeGreaterThan(0);
    expect(feFwd.total.txTotal).toBe(feFwd.total.txPackets + feFwd.total.txDropped);
    expect(feFwd.ports.get(0)).toEqual(feFwd.total);
    expect(beFwd.total.rxPackets).toBe(sent);
    expect(beFwd.total.txPackets).toBe(0);
    expect(beNic.rxPackets).toBe(sent);
    expect(beNic.rxBytes).toBe(sent * size);

    const processes = [fe, be];
    await fe.close();
    await be.close();
    for (const t of processes) {
      expect(t.running).toBe(false);
      expect(pidAlive(t.proc.pid)).toBe(false);
      expect(existsSync(t.tempDir)).toBe(false);
      for (const d of dpdkRuntimeDirs(t.filePrefix)) expect(existsSync(d)).toBe(false);
    }
  }, 60_000);

  const ioCases = [
    { name: '1 pair, split ring', queues: 1, packedVq: false },
    { name: '2 pairs, packed ring', queues: 2, packedVq: true },
  ] as const;

  it.each(ioCases)('io loop seeded with start tx_first ($name): packets circulate at a measurable rate', async ({ name, queues, packedVq }) => {
    const sock = socketPath(dir, `io${queues}.sock`);
    const be = await start({ role: 'backend', socketPath: sock, forwardMode: 'io', queues });
    const fe = await start({ role: 'frontend', socketPath: sock, forwardMode: 'io', autoStart: false, queues, packedVq });
    await be.waitForLinkUp(0, 10_000);
    await fe.start(4); // 4 bursts of 32 packets per queue circulate between the two
    const rate = await fe.measureRate(2000);
    console.log(
      `testpmd io loop (virtio-user <-> vhost PMD, 64 B, ${name}): ${(rate.rxPps / 1e6).toFixed(2)} Mpps rx, ` +
        `${(rate.txPps / 1e6).toFixed(2)} Mpps tx over ${rate.seconds.toFixed(2)} s (not a benchmark)`,
    );
    expect(rate.rxPps).toBeGreaterThan(10_000);
    expect(rate.txPps).toBeGreaterThan(10_000);

    const feFwd = await fe.stop();
    await new Promise((r) => setTimeout(r, 200));
    const beFwd = await be.stop();
    // Everything the front-end sent was received by the back-end; what the back-end sent back
    // either reached the front-end or was still in its RX rings: at most the seeded packets.
    const seeded = 4 * 32 * queues;
    expect(beFwd.total.rxPackets).toBe(feFwd.total.txPackets);
    const inFlight = beFwd.total.txPackets - feFwd.total.rxPackets;
    expect(inFlight).toBeGreaterThanOrEqual(0);
    expect(inFlight).toBeLessThanOrEqual(seeded);
    expect(feFwd.total.rxPackets).toBeGreaterThan(seeded);
  }, 60_000);

  it('front-end as socket server, back-end as client: the prompt comes once the back-end dials in', async () => {
    const sock = socketPath(dir, 'srv.sock');
    const fe = await start({ role: 'frontend', server: true, socketPath: sock, forwardMode: 'txonly', txpkts: 64 });
    const be = await start({ role: 'backend', client: true, socketPath: sock, forwardMode: 'rxonly' });
    await fe.waitUntilReady();
    await be.waitForLinkUp(0, 10_000);
    const rate = await be.measureRate(1000);
    expect(rate.rxPackets).toBeGreaterThan(0);
    const feFwd = await fe.stop();
    await new Promise((r) => setTimeout(r, 200));
    expect((await be.stop()).total.rxPackets).toBe(feFwd.total.txPackets);
  }, 60_000);

  it('a front-end without a back-end fails fast with testpmd output in the error', async () => {
    const sock = socketPath(dir, 'nobody.sock');
    const err = await start({ role: 'frontend', socketPath: sock, waitForSocket: false, readyTimeoutMs: 15_000 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err?.message).toMatch(/testpmd-frontend exited/);
    expect(err?.message).toContain('net_virtio_user0');
  }, 30_000);
});
