/**
 * A QEMU guest (TCG; kernel and busybox initramfs built from Debian packages)
 * with `-netdev vhost-user` + virtio-net-pci (vectors=0) on
 * `vhost-ts net --module=responder`: the guest pings the responder's address
 * and gets replies, its ARP entry holds the responder's MAC. With mq=on and 2
 * queue pairs (2 vCPUs, so Linux enables both pairs through the control
 * queue) a ping from each vCPU leaves on its own TX queue: both queue pairs
 * carry requests and replies. With `--module=switch` and two sockets, two
 * guests ping each other through vhost-ts (frames cross between the ports'
 * worker threads).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  acquirePeerLock,
  buildGuest,
  isGuestBuildAvailable,
  isQemuAvailable,
  makeTempDir,
  markerValue,
  QemuGuest,
  removeDir,
  runGuest,
  socketPath,
  type GuestImage,
} from '@vhost-ts/peers';
import { NetDaemon, isCliBuilt } from '../packages/net/test/support/daemon.js';

const hasQemu = isQemuAvailable().ok && isGuestBuildAvailable().ok && isCliBuilt();
const IP = '10.0.0.1';
/** TCG on a busy host can fail the kernel's IO-APIC timer check (panic): skip it, as VMs usually do. */
const APPEND = 'no_timer_check';
const MAC = '02:00:00:00:00:01';

const received = (v: string): string => `$(sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p' ${v})`;

const ONE_QUEUE_SCRIPT = `
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
ping -c 4 -i 0.3 -W 3 ${IP} > /tmp/ping.txt 2>&1
rc=$?
cat /tmp/ping.txt
mark ping-rc $rc
mark ping-received ${received('/tmp/ping.txt')}
mark neigh $(ip neigh show ${IP})
`;

const MQ_SCRIPT = `
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
mark tx-queues $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)
for cpu in 0 1; do
  taskset $((1 << cpu)) ping -c 3 -i 0.3 -W 3 ${IP} > /tmp/ping$cpu.txt 2>&1
  rc=$?
  cat /tmp/ping$cpu.txt
  mark ping$cpu-rc $rc
  mark ping$cpu-received ${received('/tmp/ping$cpu.txt')}
done
`;

/** The daemon's log lines (its statistics lines left out). */
function daemonLog(d: NetDaemon): string {
  return d.proc.output
    .text()
    .split('\n')
    .filter((l) => !l.startsWith('{"ts"'))
    .slice(-60)
    .join('\n');
}

/** A guest at 10.0.0.<me> that pings 10.0.0.<peer> until 3 replies (the peer boots at the same time). */
const pingPeerScript = (me: number, peer: number): string => `
ip link set eth0 up
ip addr add 10.0.0.${me}/24 dev eth0
# Wait (up to about a minute) until the peer, booting at the same time, answers.
i=0
while [ $i -lt 60 ] && ! ping -c 1 -W 1 10.0.0.${peer} > /dev/null 2>&1; do i=$((i + 1)); done
mark waited $i
ping -c 3 -i 0.3 -W 3 10.0.0.${peer} > /tmp/ping.txt 2>&1
rc=$?
cat /tmp/ping.txt
mark ping-rc $rc
mark ping-received ${received('/tmp/ping.txt')}
# Stay reachable a little longer for the peer's last pings.
sleep 3
`;

describe('QEMU guest on vhost-ts net --module=responder', () => {
  let release: (() => Promise<void>) | undefined;
  let dir = '';
  let oneQueueGuest: GuestImage;
  let mqGuest: GuestImage;
  let guestA: GuestImage;
  let guestB: GuestImage;
  const daemons: NetDaemon[] = [];

  beforeAll(async () => {
    if (!hasQemu) return;
    // Cold cache: downloads the kernel package once; cached afterwards.
    oneQueueGuest = await buildGuest({ script: ONE_QUEUE_SCRIPT });
    mqGuest = await buildGuest({ script: MQ_SCRIPT });
    guestA = await buildGuest({ script: pingPeerScript(2, 3) });
    guestB = await buildGuest({ script: pingPeerScript(3, 2) });
    release = await acquirePeerLock();
    dir = await makeTempDir('net-qemu');
  }, 600_000);

  afterAll(async () => {
    await Promise.all(daemons.splice(0).map((d) => d.close()));
    if (dir !== '') await removeDir(dir);
    await release?.();
  }, 60_000);

  async function responder(queues: number): Promise<NetDaemon> {
    const d = await NetDaemon.start({
      socketPaths: [socketPath(dir, `net${queues}.sock`)],
      args: [`--queues=${queues}`, '--module=responder', `--module-opt=ip=${IP}`, `--module-opt=mac=${MAC}`, '--cpus=1', '--stats-interval=0.25'],
    });
    daemons.push(d);
    return d;
  }

  it.skipIf(!hasQemu)('1 queue pair: the guest pings the responder and gets every reply (needs qemu-system-x86_64 and a guest build)', async () => {
    const d = await responder(1);
    const run = await runGuest({ image: oneQueueGuest, append: APPEND, net: [{ socketPath: d.socketPaths[0]! }], timeoutMs: 90_000 });
    const ctx = `\n--- guest serial ---\n${run.serial}\n--- daemon log ---\n${daemonLog(d)}`;
    expect(run.exit.code, ctx).toBe(0);
    expect(markerValue(run.markers, 'exit'), ctx).toBe('0');
    expect(run.markers.filter((m) => m.name === 'insmod-failed'), ctx).toEqual([]);
    expect(markerValue(run.markers, 'ping-rc'), ctx).toBe('0');
    expect(Number(markerValue(run.markers, 'ping-received')), ctx).toBe(4);
    expect(markerValue(run.markers, 'neigh'), ctx).toContain(`lladdr ${MAC}`);
    const { status, ms } = await d.stop();
    daemons.splice(daemons.indexOf(d), 1);
    expect(status, ctx).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(2000);
  }, 120_000);

  it.skipIf(!hasQemu)('mq=on, 2 queue pairs: a ping from each vCPU is answered on its own queue pair (needs qemu-system-x86_64 and a guest build)', async () => {
    const d = await responder(2);
    const since = d.position;
    const run = await runGuest({ image: mqGuest, append: APPEND, smp: 2, net: [{ socketPath: d.socketPaths[0]!, queues: 2 }], timeoutMs: 90_000 });
    const ctx = `\n--- guest serial ---\n${run.serial}\n--- daemon log ---\n${daemonLog(d)}`;
    expect(run.exit.code, ctx).toBe(0);
    expect(markerValue(run.markers, 'exit'), ctx).toBe('0');
    expect(markerValue(run.markers, 'tx-queues'), ctx).toBe('2');
    for (const cpu of [0, 1]) {
      expect(markerValue(run.markers, `ping${cpu}-rc`), ctx).toBe('0');
      expect(Number(markerValue(run.markers, `ping${cpu}-received`)), ctx).toBe(3);
    }
    // Both queue pairs took requests from the guest and delivered replies to it.
    const lines = d.statsLines(since);
    for (const q of ['q0', 'q1']) {
      expect(lines.some((l) => (l.queues[q]?.['tx-pps'] ?? 0) > 0), `${q} carried requests${ctx}`).toBe(true);
      expect(lines.some((l) => (l.queues[q]?.['rx-pps'] ?? 0) > 0), `${q} carried replies${ctx}`).toBe(true);
    }
  }, 120_000);

  it.skipIf(!hasQemu)('switch: two guests on two ports ping each other through vhost-ts (needs qemu-system-x86_64 and a guest build)', async () => {
    const d = await NetDaemon.start({
      socketPaths: [socketPath(dir, 'port0.sock'), socketPath(dir, 'port1.sock')],
      args: ['--module=switch', '--cpus=1', '--stats-interval=0.25'],
    });
    daemons.push(d);
    const since = d.position;
    const [a, b] = await Promise.all([
      runGuest({ image: guestA, append: APPEND, net: [{ socketPath: d.socketPaths[0]!, mac: '52:54:00:00:00:0a' }], timeoutMs: 100_000 }),
      runGuest({ image: guestB, append: APPEND, net: [{ socketPath: d.socketPaths[1]!, mac: '52:54:00:00:00:0b' }], timeoutMs: 100_000 }),
    ]);
    const ctx = `\n--- guest A ---\n${a.serial}\n--- guest B ---\n${b.serial}\n--- daemon log ---\n${daemonLog(d)}`;
    for (const run of [a, b]) {
      expect(run.exit.code, ctx).toBe(0);
      expect(markerValue(run.markers, 'ping-rc'), ctx).toBe('0');
      expect(Number(markerValue(run.markers, 'ping-received')), ctx).toBe(3);
    }
    // Each port received frames from the other (its guest's RX ring was fed by the other port's worker).
    const lines = d.statsLines(since);
    for (const row of ['p0/q0', 'p1/q0']) expect(lines.some((l) => (l.queues[row]?.['rx-pps'] ?? 0) > 0), `${row}${ctx}`).toBe(true);
  }, 150_000);

  it.skipIf(!hasQemu)('--client: QEMU listens (server=on), the daemon dials in and serves the guest (needs qemu-system-x86_64 and a guest build)', async () => {
    const sock = socketPath(dir, 'client-mode.sock');
    // QEMU creates the socket and waits for a back-end before it boots.
    const guest = await QemuGuest.start({ image: oneQueueGuest, append: APPEND, net: [{ socketPath: sock, server: true }] });
    try {
      const d = await NetDaemon.start({
        socketPaths: [sock],
        args: ['--client', '--module=responder', `--module-opt=ip=${IP}`, `--module-opt=mac=${MAC}`, '--cpus=1', '--stats-interval=0'],
      });
      daemons.push(d);
      const run = await guest.waitForExit(90_000);
      const ctx = `\n--- guest serial ---\n${run.serial}\n--- daemon log ---\n${daemonLog(d)}`;
      expect(run.exit.code, ctx).toBe(0);
      expect(markerValue(run.markers, 'ping-rc'), ctx).toBe('0');
      expect(Number(markerValue(run.markers, 'ping-received')), ctx).toBe(4);
      const { status } = await d.stop();
      daemons.splice(daemons.indexOf(d), 1);
      expect(status, ctx).toEqual({ code: 0, signal: null });
    } finally {
      await guest.close();
    }
  }, 120_000);
});
