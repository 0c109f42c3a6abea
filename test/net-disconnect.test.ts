/**
 * Disconnect under traffic: dpdk-testpmd (virtio-user, io loop through
 * `vhost-ts net --module=echo`) is killed with SIGKILL mid-run, three times;
 * each time the daemon's open fds (/proc/<pid>/fd), threads and guest memory
 * mappings (/proc/<pid>/maps) return exactly to their baseline, the total
 * mapping count to its post-warm-up level within V8's heap noise, and a new
 * testpmd is served with nothing dropped.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquirePeerLock, isTestpmdAvailable, makeTempDir, removeDir, sleep, socketPath, Testpmd } from '@vhost-ts/peers';
import { NetDaemon, isCliBuilt } from '../packages/net/test/support/daemon.js';

const hasTestpmd = isTestpmdAvailable().ok && isCliBuilt();
const QUEUES = 2;
/** testpmd's --no-huge -m 512: one 512 MiB memfd region shared with the back-end. */
const GUEST_BYTES = 512 << 20;

/** Mappings of exactly the guest memory size (the region itself, or its zero overlay after release). */
function guestSizedMappings(pid: number): number {
  let n = 0;
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+)\s/.exec(line);
    if (m !== null && parseInt(m[2]!, 16) - parseInt(m[1]!, 16) === GUEST_BYTES) n++;
  }
  return n;
}

function threads(pid: number): number {
  return readdirSync(`/proc/${pid}/task`).length;
}

function memfdMappings(pid: number): number {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
}

describe('vhost-ts net: front-end killed under traffic', () => {
  let release: (() => Promise<void>) | undefined;
  let dir = '';
  let daemon: NetDaemon | undefined;
  const open: Testpmd[] = [];

  beforeAll(async () => {
    if (!hasTestpmd) return;
    release = await acquirePeerLock();
    dir = await makeTempDir('net-disc');
  }, 600_000);

  afterAll(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    await daemon?.close();
    if (dir !== '') await removeDir(dir);
    await release?.();
  }, 60_000);

  async function startFrontend(packed: boolean): Promise<Testpmd> {
    const since = daemon!.position;
    const tp = await Testpmd.start({ role: 'frontend', socketPath: daemon!.socketPaths[0]!, queues: QUEUES, packedVq: packed, forwardMode: 'io', autoStart: false, txpkts: 64 });
    open.push(tp);
    await daemon!.waitFor(/device \d+ started/, since);
    await tp.start(4);
    return tp;
  }

  it.skipIf(!hasTestpmd)('SIGKILLed three times mid-traffic: fds and mappings back to baseline each time, then a new front-end is served (needs dpdk-testpmd)', async () => {
    daemon = await NetDaemon.start({
      socketPaths: [socketPath(dir, 'net.sock')],
      args: [`--queues=${QUEUES}`, '--module=echo', '--cpus=1', '--stats-interval=0'],
    });
    await sleep(500);
    const base = daemon.resources();
    const baseThreads = threads(daemon.pid);
    const baseGuest = guestSizedMappings(daemon.pid);
    /** Total mappings after the first connection (code loaded on first use, heap grown): the level later cycles must keep. */
    let warmMappings = -1;
    expect(memfdMappings(daemon.pid)).toBe(0);

    for (let cycle = 0; cycle < 3; cycle++) {
      const tp = await startFrontend(cycle % 2 === 1);
      const rate = await tp.measureRate(1000);
      expect(rate.rxPps, `cycle ${cycle}: traffic before the kill`).toBeGreaterThan(0);
      const during = daemon.resources();
      // The connection holds the guest memory, eventfds per vring and worker state.
      expect(during.fds).toBeGreaterThan(base.fds);
      expect(memfdMappings(daemon.pid)).toBeGreaterThan(0);

      const since = daemon.position;
      await tp.kill();
      await tp.close();
      open.splice(open.indexOf(tp), 1);
      await daemon.waitFor(/connection closed/, since);

      // Released: the fds at once, the mappings once the deleters ran.
      const end = Date.now() + 10_000;
      let now = daemon.resources();
      const released = (): boolean =>
        now.fds === base.fds && threads(daemon!.pid) === baseThreads && memfdMappings(daemon!.pid) === 0 && guestSizedMappings(daemon!.pid) === baseGuest;
      while (!released() && Date.now() < end) {
        await sleep(50);
        now = daemon.resources();
      }
      const msg = `cycle ${cycle}: baseline ${JSON.stringify(base)}, ${baseThreads} threads; now ${JSON.stringify(now)}, ${threads(daemon.pid)} threads\n${daemon.describeFds()}`;
      expect(now.fds, msg).toBe(base.fds);
      expect(threads(daemon.pid), msg).toBe(baseThreads);
      expect(memfdMappings(daemon.pid), msg).toBe(0);
      expect(guestSizedMappings(daemon.pid), msg).toBe(baseGuest);
      // The rest of the address space (thread stacks, V8 heap pages come and go by a few):
      // no growth from one cycle to the next.
      if (warmMappings < 0) warmMappings = now.mappings;
      expect(now.mappings, msg).toBeLessThanOrEqual(warmMappings + 12);
      expect(daemon.running).toBe(true);
    }

    // A new front-end after the kills is served normally: the io loop runs with nothing dropped.
    const tp = await startFrontend(false);
    await sleep(1500);
    const fwd = await tp.stop();
    expect(fwd.total.rxPackets).toBeGreaterThan(10_000);
    expect(fwd.total.txPackets - fwd.total.rxPackets).toBeLessThanOrEqual(4 * 32 * QUEUES);
    expect(fwd.total.txDropped).toBe(0);
    await tp.close();
    open.splice(open.indexOf(tp), 1);

    const { status, ms } = await daemon.stop();
    daemon = undefined;
    expect(status).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(2000);
  });
});
