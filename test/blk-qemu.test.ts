// A QEMU guest (TCG, Debian kernel + busybox) on `vhost-ts blk`: it writes a
// random pattern to /dev/vda from two vCPUs (both request queues), drops its
// caches, reads it back with direct I/O and compares checksums; the backing
// file on the host must hold the same bytes. The same guest runs against
// qemu-storage-daemon side by side. Then the back-end is killed (SIGKILL)
// while the guest is writing and started again: QEMU reconnects, hands the
// inflight area back, and the guest's writes complete with matching checksums.
import { createHash } from 'node:crypto';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  ManagedProcess,
  QemuGuest,
  StorageDaemon,
  acquirePeerLock,
  buildGuest,
  isGuestBuildAvailable,
  isQemuAvailable,
  isStorageDaemonAvailable,
  makeTempDir,
  markerValue,
  removeDir,
  socketPath,
  type GuestImage,
  type GuestRun,
} from '@vhost-ts/peers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MAIN = path.resolve(import.meta.dirname, '../packages/cli/dist/main.js');
const MiB = 1024 * 1024;
const DISK = 64 * MiB;

const hasQemu = isQemuAvailable().ok && isGuestBuildAvailable().ok;
const hasQsd = isStorageDaemonAvailable().ok;

/** Writes `chunks` x 64 KiB of random data with two writers (one per vCPU, so both queues), reads back direct. */
function writeReadScript(chunks: number): string {
  const half = chunks / 2;
  return `
mark sectors $(cat /sys/block/vda/size)
mark queues $(ls /sys/block/vda/mq | wc -l)
dd if=/dev/urandom of=/tmp/pattern bs=64k count=${chunks} 2>/dev/null
mark written-sha $(sha256sum < /tmp/pattern)
T0=""; T1=""
if taskset 1 true 2>/dev/null; then T0="taskset 1"; T1="taskset 2"; fi
$T0 dd if=/tmp/pattern of=/dev/vda bs=64k count=${half} oflag=direct conv=fsync 2>/dev/null & p0=$!
$T1 dd if=/tmp/pattern of=/dev/vda bs=64k skip=${half} seek=${half} count=${half} oflag=direct conv=fsync 2>/dev/null & p1=$!
wait $p0; r0=$?; wait $p1; r1=$?
mark dd-rc $r0$r1
echo 3 > /proc/sys/vm/drop_caches
mark read-sha $(dd if=/dev/vda bs=64k count=${chunks} iflag=direct 2>/dev/null | sha256sum)
`;
}

/** Four writers with direct I/O (several requests in flight), announced before they start. */
function restartScript(chunks: number): string {
  const q = chunks / 4;
  return `
mark sectors $(cat /sys/block/vda/size)
dd if=/dev/urandom of=/tmp/pattern bs=64k count=${chunks} 2>/dev/null
mark written-sha $(sha256sum < /tmp/pattern)
mark writing
pids=""
for i in 0 1 2 3; do
  dd if=/tmp/pattern of=/dev/vda bs=64k skip=$((i * ${q})) seek=$((i * ${q})) count=${q} oflag=direct 2>/dev/null &
  pids="$pids $!"
done
rc=0
for p in $pids; do wait $p || rc=1; done
sync
mark dd-rc $rc
echo 3 > /proc/sys/vm/drop_caches
mark read-sha $(dd if=/dev/vda bs=64k count=${chunks} iflag=direct 2>/dev/null | sha256sum)
`;
}

const DISK_SECTORS = (64 * 1024 * 1024) / 512;

/** Reports the size, then waits (up to 60 s) for it to change and writes/reads back at the new end. */
const RESIZE_SCRIPT = `
mark size1 $(cat /sys/block/vda/size)
i=0
while [ $(cat /sys/block/vda/size) -le ${DISK_SECTORS} ] && [ $i -lt 600 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
mark size2 $(cat /sys/block/vda/size)
dd if=/dev/urandom of=/tmp/tail bs=64k count=16 2>/dev/null
mark tail-sha $(sha256sum < /tmp/tail)
dd if=/tmp/tail of=/dev/vda bs=64k seek=1024 count=16 oflag=direct conv=fsync 2>/dev/null
mark tail-rc $?
mark tail-read $(dd if=/dev/vda bs=64k skip=1024 count=16 iflag=direct 2>/dev/null | sha256sum)
`;

const BASIC_CHUNKS = 128; // 8 MiB
const RESTART_CHUNKS = 64; // 4 MiB, with every completion held 150 ms
const RESTART_BIG_CHUNKS = 512; // 32 MiB at full speed, so the kill lands mid-stream

let dir = '';
let basicGuest: GuestImage;
let restartGuest: GuestImage;
let restartBigGuest: GuestImage;
let resizeGuest: GuestImage;
let release: (() => Promise<void>) | undefined;

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function newDisk(name: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, new Uint8Array(0));
  truncateSync(file, DISK);
  return file;
}

function startDaemon(sock: string, file: string, args: string[] = [], statsInterval = '0.5'): ManagedProcess {
  return new ManagedProcess(process.execPath, [MAIN, 'blk', `--socket-path=${sock}`, `--blk-file=${file}`, '--queues=2', `--stats-interval=${statsInterval}`, ...args], {
    name: 'vhost-ts blk',
  });
}

/** Requests of queue q over every device life in the daemon's output ("device N totals: q0 12 requests ..."). */
function queueRequests(out: string, q: number): number {
  let sum = 0;
  for (const m of out.matchAll(new RegExp(`device \\d+ totals: .*?\\bq${q} (\\d+) requests`, 'g'))) sum += Number(m[1]);
  return sum;
}

/** Checks a guest run's markers and the host file against the pattern's checksum. */
function checkRun(run: GuestRun, file: string, chunks: number): void {
  const ctx = `\n--- guest serial ---\n${run.serial}`;
  expect(run.exit.code, ctx).toBe(0);
  expect(markerValue(run.markers, 'exit'), ctx).toBe('0');
  expect(run.markers.filter((m) => m.name === 'insmod-failed'), ctx).toEqual([]);
  expect(markerValue(run.markers, 'sectors'), ctx).toBe(String(DISK / 512));
  expect(markerValue(run.markers, 'dd-rc'), ctx).toMatch(/^0+$/);
  const written = markerValue(run.markers, 'written-sha')?.split(' ')[0];
  const read = markerValue(run.markers, 'read-sha')?.split(' ')[0];
  expect(written, ctx).toMatch(/^[0-9a-f]{64}$/);
  expect(read, ctx).toBe(written);
  // The bytes are in the backing file on the host.
  expect(sha256(readFileSync(file).subarray(0, chunks * 65536))).toBe(written);
}

describe('QEMU guest on vhost-ts blk (vhost-user-blk-pci, 2 queues, memfd shared memory)', () => {
  beforeAll(async () => {
    if (!hasQemu) return;
    basicGuest = await buildGuest({ script: writeReadScript(BASIC_CHUNKS) });
    restartGuest = await buildGuest({ script: restartScript(RESTART_CHUNKS) });
    restartBigGuest = await buildGuest({ script: restartScript(RESTART_BIG_CHUNKS) });
    resizeGuest = await buildGuest({ script: RESIZE_SCRIPT });
    release = await acquirePeerLock();
    dir = await makeTempDir('blk-qemu');
  }, 600_000);

  afterAll(async () => {
    if (dir !== '') await removeDir(dir);
    await release?.();
  });

  it.skipIf(!hasQemu)('the guest writes a random pattern with dd conv=fsync, reads it back with direct I/O: checksums match, and the host file holds it (needs qemu-system-x86_64)', async () => {
    const file = newDisk('vts.img');
    const sock = socketPath(dir, 'vts.sock');
    const be = startDaemon(sock, file);
    try {
      await be.waitForOutput(/listening/, { timeoutMs: 15_000 });
      const guest = await QemuGuest.start({ image: basicGuest, smp: 2, blk: [{ socketPath: sock, numQueues: 2 }] });
      let run: GuestRun;
      try {
        run = await guest.waitForExit(120_000);
      } finally {
        await guest.close();
      }
      checkRun(run, file, BASIC_CHUNKS);
      expect(markerValue(run.markers, 'queues')).toBe('2');
      // Both request queues carried I/O: the totals the daemon logs when a device stops (the
      // live view's rows can miss a guest whose whole I/O fits between two samples).
      const out = be.output.text();
      expect(queueRequests(out, 0), out).toBeGreaterThan(0);
      expect(queueRequests(out, 1), out).toBeGreaterThan(0);
      expect(out).toMatch(/inflight area of 2x/);
    } finally {
      const st = await be.close();
      expect(st.code, be.describe()).toBe(0);
    }
  }, 180_000);

  it.skipIf(!hasQemu || !hasQsd)('side by side: the same guest passes against qemu-storage-daemon --export type=vhost-user-blk (needs qemu-system-x86_64 and qemu-storage-daemon)', async () => {
    const file = newDisk('qsd.img');
    const sd = await StorageDaemon.start({ imagePath: file, numQueues: 2 });
    let run: GuestRun;
    try {
      const guest = await QemuGuest.start({ image: basicGuest, smp: 2, blk: [{ socketPath: sd.socketPath, numQueues: 2 }] });
      try {
        run = await guest.waitForExit(120_000);
      } finally {
        await guest.close();
      }
    } finally {
      await sd.close();
    }
    checkRun(run, file, BASIC_CHUNKS);
  }, 180_000);

  it.skipIf(!hasQemu)('SIGHUP after the backing file grew: the guest sees the new capacity (CONFIG_CHANGE_MSG) and uses it (needs qemu-system-x86_64)', async () => {
    const file = newDisk('resize.img');
    const sock = socketPath(dir, 'resize.sock');
    const be = startDaemon(sock, file);
    try {
      await be.waitForOutput(/listening/, { timeoutMs: 15_000 });
      const guest = await QemuGuest.start({ image: resizeGuest, blk: [{ socketPath: sock, numQueues: 2 }] });
      let run: GuestRun;
      try {
        expect(await guest.waitForMarker('size1', 90_000)).toBe(String(DISK / 512));
        truncateSync(file, 2 * DISK);
        be.signal('SIGHUP');
        await be.waitForOutput(/capacity 67108864 -> 134217728 bytes \(1 device\(s\) notified\)/, { timeoutMs: 10_000 });
        run = await guest.waitForExit(90_000);
      } finally {
        await guest.close();
      }
      const ctx = `\n--- guest serial ---\n${run.serial}`;
      expect(markerValue(run.markers, 'size2'), ctx).toBe(String((2 * DISK) / 512));
      expect(markerValue(run.markers, 'tail-rc'), ctx).toBe('0');
      const sha = markerValue(run.markers, 'tail-sha')?.split(' ')[0];
      expect(markerValue(run.markers, 'tail-read')?.split(' ')[0], ctx).toBe(sha);
      expect(sha256(readFileSync(file).subarray(DISK, DISK + MiB))).toBe(sha);
    } finally {
      expect((await be.close()).code, be.describe()).toBe(0);
    }
  }, 180_000);

  /**
   * Kills the back-end with SIGKILL while the guest's four writers are running and starts it
   * again on the same socket and file; QEMU (reconnect=1) redials, hands the inflight area back
   * (SET_INFLIGHT_FD) and the requests the dead back-end had in flight are resubmitted.
   */
  async function killAndRestart(image: GuestImage, args: string[], holdMs: number): Promise<{ run: GuestRun; file: string; second: string }> {
    const file = newDisk(`restart${args.length}.img`);
    const sock = socketPath(dir, `restart${args.length}.sock`);
    // Sampled every 50 ms: the kill follows the first sample with I/O, and a fast back-end writes
    // the whole pattern within a few hundred milliseconds.
    const first = startDaemon(sock, file, args, '0.05');
    let second: ManagedProcess | null = null;
    let guest: QemuGuest | null = null;
    try {
      await first.waitForOutput(/listening/, { timeoutMs: 15_000 });
      guest = await QemuGuest.start({ image, blk: [{ socketPath: sock, numQueues: 2, reconnect: 1 }] });
      await guest.waitForMarker('writing', 90_000);
      // Let the writers get going on the back-end, then kill it mid-stream.
      await first.waitForOutput(/"iops":[1-9]/, { timeoutMs: 30_000, since: first.output.position });
      await new Promise((r) => setTimeout(r, holdMs));
      first.signal('SIGKILL');
      const st = await first.waitForExit(10_000);
      expect(st.signal).toBe('SIGKILL');
      expect(guest.markers.find((m) => m.name === 'dd-rc'), 'the guest finished before the kill: nothing was tested').toBeUndefined();
      second = startDaemon(sock, file, args);
      await second.waitForOutput(/device \d+ started/, { timeoutMs: 30_000 });
      const run = await guest.waitForExit(120_000);
      return { run, file, second: second.output.text() };
    } finally {
      await guest?.close();
      await first.close();
      if (second !== null) expect((await second.close()).code, second.describe()).toBe(0);
    }
  }

  it.skipIf(!hasQemu)('SIGKILL while the guest writes (every completion held 150 ms): requests in flight are resubmitted from the inflight area, checksums match (needs qemu-system-x86_64)', async () => {
    const { run, file, second } = await killAndRestart(restartGuest, ['--io=async', '--fault-delay-ms=150'], 300);
    checkRun(run, file, RESTART_CHUNKS);
    expect(second).toMatch(/inflight area of 2x/);
    expect(second).toMatch(/resubmitting [1-9]\d* in-flight request/);
  }, 240_000);

  it.skipIf(!hasQemu)('SIGKILL while the guest writes (default sync I/O): QEMU reconnects and the writes complete, checksums match (needs qemu-system-x86_64)', async () => {
    const { run, file, second } = await killAndRestart(restartBigGuest, [], 0);
    checkRun(run, file, RESTART_BIG_CHUNKS);
    expect(second).toMatch(/inflight area of 2x/);
  }, 240_000);
});
