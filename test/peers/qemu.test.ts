// QEMU guests (TCG, kernel + busybox initramfs built from Debian packages) against reference
// back-ends: DPDK's vhost PMD (net, icmpecho answers the guest's ARP and ping) and
// qemu-storage-daemon (blk). Proves the guest builder and QEMU harness; no vhost-ts code.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import path from 'node:path';
import {
  acquirePeerLock,
  buildGuest,
  createRawImage,
  isGuestBuildAvailable,
  isQemuAvailable,
  isStorageDaemonAvailable,
  isTestpmdAvailable,
  makeTempDir,
  markerValue,
  QemuGuest,
  removeDir,
  runGuest,
  socketPath,
  StorageDaemon,
  Testpmd,
  type GuestImage,
} from '@vhost-ts/peers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const NET_SCRIPT = `
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
ping -c 4 -i 0.3 -W 3 10.0.0.1 > /tmp/ping.txt 2>&1
rc=$?
cat /tmp/ping.txt
mark ping-rc $rc
mark ping-received $(sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p' /tmp/ping.txt)
mark neigh $(ip neigh show 10.0.0.1)
`;

const BLK_BYTES = 1 << 20;
const BLK_SCRIPT = `
mark sectors $(cat /sys/block/vda/size)
dd if=/dev/urandom of=/tmp/pattern bs=64k count=${BLK_BYTES / 65536} 2>/dev/null
mark written-sha $(sha256sum < /tmp/pattern)
dd if=/tmp/pattern of=/dev/vda bs=64k conv=fsync 2>/dev/null
mark dd-rc $?
echo 3 > /proc/sys/vm/drop_caches
mark read-sha $(dd if=/dev/vda bs=64k count=${BLK_BYTES / 65536} iflag=direct 2>/dev/null | sha256sum)
`;

const checks = [isQemuAvailable(), isGuestBuildAvailable(), isTestpmdAvailable(), isStorageDaemonAvailable()];

describe('QEMU guest against reference vhost-user back-ends', () => {
  let release: (() => Promise<void>) | undefined;
  let dir = '';
  let netGuest: GuestImage;
  let blkGuest: GuestImage;

  beforeAll(async () => {
    for (const c of checks) if (!c.ok) throw new Error(c.reason);
    // Cold cache: downloads the kernel package (~70 MB) once; cached afterwards.
    netGuest = await buildGuest({ script: NET_SCRIPT });
    blkGuest = await buildGuest({ script: BLK_SCRIPT });
    release = await acquirePeerLock();
    dir = await makeTempDir('qemu-test');
  }, 600_000);

  afterAll(async () => {
    await removeDir(dir);
    await release?.();
  });

  it('vhost-user-net: the guest pings DPDK testpmd in icmpecho mode and gets replies', async () => {
    const sock = socketPath(dir, 'net.sock');
    const be = await Testpmd.start({ role: 'backend', socketPath: sock, forwardMode: 'icmpecho' });
    try {
      const run = await runGuest({ image: netGuest, net: [{ socketPath: sock }], timeoutMs: 60_000 });
      const ctx = `\n--- guest serial ---\n${run.serial}`;
      expect(run.exit.code, ctx).toBe(0);
      expect(markerValue(run.markers, 'exit'), ctx).toBe('0');
      expect(run.markers.filter((m) => m.name === 'insmod-failed'), ctx).toEqual([]);
      expect(markerValue(run.markers, 'ping-rc'), ctx).toBe('0');
      expect(Number(markerValue(run.markers, 'ping-received')), ctx).toBe(4);
      // The ARP answer came from testpmd's port.
      const mac = be.macAddress(0);
      expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect(markerValue(run.markers, 'neigh'), ctx).toContain(`lladdr ${mac}`);
      const fwd = await be.stop();
      // At least 1 ARP request + 4 echo requests in, as many answers out.
      expect(fwd.total.rxPackets).toBeGreaterThanOrEqual(5);
      expect(fwd.total.txPackets).toBeGreaterThanOrEqual(5);
    } finally {
      await be.close();
    }
  }, 90_000);

  it('vhost-user-blk: the guest writes and reads back /dev/vda on qemu-storage-daemon', async () => {
    const img = path.join(dir, 'disk.img');
    await createRawImage(img, 16 << 20);
    const sd = await StorageDaemon.start({ imagePath: img, numQueues: 2 });
    let run;
    try {
      run = await runGuest({ image: blkGuest, blk: [{ socketPath: sd.socketPath, numQueues: 2 }], timeoutMs: 60_000 });
    } finally {
      await sd.close();
    }
    const ctx = `\n--- guest serial ---\n${run.serial}`;
    expect(run.exit.code, ctx).toBe(0);
    expect(markerValue(run.markers, 'exit'), ctx).toBe('0');
    expect(markerValue(run.markers, 'sectors'), ctx).toBe(String((16 << 20) / 512));
    expect(markerValue(run.markers, 'dd-rc'), ctx).toBe('0');
    const written = markerValue(run.markers, 'written-sha')?.split(' ')[0];
    const read = markerValue(run.markers, 'read-sha')?.split(' ')[0];
    expect(written, ctx).toMatch(/^[0-9a-f]{64}$/);
    expect(read, ctx).toBe(written);
    // The bytes reached the host file.
    const fh = await open(img, 'r');
    const buf = Buffer.alloc(BLK_BYTES);
    await fh.read(buf, 0, BLK_BYTES, 0);
    await fh.close();
    expect(createHash('sha256').update(buf).digest('hex')).toBe(written);
  }, 90_000);

  it('a guest that never powers off is killed at the timeout, with its serial output in the error', async () => {
    // No back-end behind the socket: QEMU waits to connect (reconnect=1) and never boots.
    const guest = await QemuGuest.start({ image: blkGuest, blk: [{ socketPath: socketPath(dir, 'none.sock'), reconnect: 1 }] });
    const t0 = Date.now();
    await expect(guest.waitForExit(2000)).rejects.toThrow(/did not power off within 2000 ms/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(guest.running).toBe(false);
  }, 30_000);
});
