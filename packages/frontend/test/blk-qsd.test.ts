/**
 * The blk personality against a real vhost-user-blk back-end:
 * qemu-storage-daemon (Debian qemu-system-common) exporting a raw image.
 * Patterns written with several requests in flight on 2 queues read back
 * intact; flush, write-zeroes (reads back zeros), discard, get-id and an
 * out-of-range read (IOERR) behave; the image holds what we wrote.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { createRawImage, isStorageDaemonAvailable, makeTempDir, removeDir, StorageDaemon } from '@vhost-ts/peers';
import { BlkDriver, blkVerify, openBlkDevice, patternWord, fillPattern, SECTOR_SIZE, VIRTIO_BLK_S_OK, type FrontendDevice } from '@vhost-ts/frontend';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('verifies a qemu-storage-daemon export: 2 queues, depth 8, all request types', async () => {
  const avail = isStorageDaemonAvailable();
  expect(avail.ok, avail.ok ? '' : avail.reason).toBe(true);
  // qemu-storage-daemon does not busy-poll: no need for the cross-process peer lock.
  const dir = await makeTempDir('fe-qsd');
  cleanups.push(() => removeDir(dir));
  const img = path.join(dir, 'disk.img');
  await createRawImage(img, 8 * 1024 * 1024);
  const qsd = await StorageDaemon.start({ imagePath: img, numQueues: 2 });
  cleanups.push(() => qsd.close().then(() => undefined));
  const dev: FrontendDevice = await openBlkDevice({ socketPath: qsd.socketPath, queues: 2, layout: 'qemu', memory: 16 << 20 });
  cleanups.push(() => dev.close().then(() => undefined));
  const drv = new BlkDriver(dev, { depth: 8 });
  expect(drv.config.capacity).toBe((8 * 1024 * 1024) / SECTOR_SIZE);
  expect(drv.config.numQueues).toBe(2);

  const s = await blkVerify(drv, { requestBytes: 8192, seconds: 0 });
  expect(s).toMatchObject({ passes: 1, mismatches: 0, errors: 0, flush: 'ok', writeZeroes: 'ok', discard: 'ok', outOfRangeRejected: true, readOnly: false });
  expect(s.writes).toBe(1024);
  expect(s.reads).toBe(1024);
  expect(s.getId).toMatch(/\S/);

  // What reached the image file is what we wrote: one more known write, then look at the file.
  const gen = 77;
  const w = await drv.submit({ op: 'write', sector: 100, length: 4096, fill: (_u8, dv, off) => fillPattern(dv, off, 100, 8, gen) });
  expect(w.status).toBe(VIRTIO_BLK_S_OK);
  expect((await drv.submit({ op: 'flush' })).status).toBe(VIRTIO_BLK_S_OK);
  const bytes = await readFile(img);
  const dv = new DataView(bytes.buffer, bytes.byteOffset + 100 * SECTOR_SIZE, 4096);
  for (let sct = 0; sct < 8; sct++) for (let k = 0; k < 128; k += 31) expect(dv.getUint32(sct * 512 + 4 * k, true)).toBe(patternWord(100 + sct, k, gen));
});
