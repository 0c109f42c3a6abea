/**
 * blk-verify: write generation-tagged patterns over a range of the disk with
 * several requests in flight on every queue, flush, read everything back and
 * compare; then write-zeroes / discard / get-id / an out-of-range read when
 * the device supports them. Repeats write+read passes until the time is up.
 */
import { VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_WRITE_ZEROES } from '@vhost-ts/virtio';
import type { BlkDriver } from './driver.js';
import { checkPattern, fillPattern, SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP } from './request.js';

export interface BlkVerifyOptions {
  /** Bytes per read/write request (multiple of 512). */
  requestBytes: number;
  /** Sectors to cover from sector 0 (0 = min(capacity, 64 MiB)). */
  sectors?: number;
  /** Requests in flight (over all queues; default driver depth x queues). */
  depth?: number;
  /** Keep doing passes until this many seconds passed (at least one pass). */
  seconds?: number;
  /** Called after every pass. */
  onPass?: (pass: BlkVerifySummary) => void;
}

export interface BlkVerifySummary {
  passes: number;
  writes: number;
  reads: number;
  bytesWritten: number;
  bytesRead: number;
  /** Read-back chunks whose content did not match (first few locations in `mismatchAt`). */
  mismatches: number;
  mismatchAt: number[];
  /** Requests with a status other than OK where OK was expected. */
  errors: number;
  flush: 'ok' | 'unsupported' | 'failed' | 'not-offered';
  writeZeroes: 'ok' | 'unsupported' | 'failed' | 'not-offered' | 'read-back-mismatch';
  discard: 'ok' | 'unsupported' | 'failed' | 'not-offered';
  getId: string | null;
  /** A read past the end of the disk got IOERR (as it must); null when not tried. */
  outOfRangeRejected: boolean | null;
  readOnly: boolean;
  seconds: number;
  iops: number;
}

/** Runs `tasks` with at most `depth` in flight. */
async function pool<T>(items: readonly T[], depth: number, task: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async (): Promise<void> => {
    while (i < items.length) await task(items[i++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(depth, items.length)) }, worker));
}

export async function blkVerify(drv: BlkDriver, o: BlkVerifyOptions): Promise<BlkVerifySummary> {
  const reqSectors = o.requestBytes / SECTOR_SIZE;
  if (!Number.isInteger(reqSectors) || reqSectors < 1) throw new RangeError(`request size ${o.requestBytes} is not a multiple of 512`);
  const capacity = drv.config.capacity;
  if (capacity < reqSectors) throw new Error(`disk of ${capacity} sectors is smaller than one request`);
  let sectors = o.sectors && o.sectors > 0 ? o.sectors : Math.min(capacity, (64 * 1024 * 1024) / SECTOR_SIZE);
  sectors = Math.min(sectors, capacity);
  sectors -= sectors % reqSectors;
  const chunks: number[] = [];
  for (let s = 0; s < sectors; s += reqSectors) chunks.push(s);
  const depth = o.depth ?? drv.depth * drv.queueCount;
  const sum: BlkVerifySummary = {
    passes: 0, writes: 0, reads: 0, bytesWritten: 0, bytesRead: 0, mismatches: 0, mismatchAt: [], errors: 0,
    flush: 'not-offered', writeZeroes: 'not-offered', discard: 'not-offered', getId: null, outOfRangeRejected: null,
    readOnly: drv.readOnly, seconds: 0, iops: 0,
  };
  const t0 = performance.now();
  const end = t0 + (o.seconds ?? 0) * 1000;
  // A generation unlikely to match what a previous run left on the disk.
  let gen = (Date.now() & 0xffff) << 8;
  do {
    gen++;
    const g = gen;
    if (!drv.readOnly) {
      await pool(chunks, depth, async (s) => {
        const r = await drv.submit({ op: 'write', sector: s, length: o.requestBytes, fill: (_u8, dv, off) => fillPattern(dv, off, s, reqSectors, g) });
        sum.writes++;
        sum.bytesWritten += o.requestBytes;
        if (r.status !== VIRTIO_BLK_S_OK) sum.errors++;
      });
      if (drv.has(VIRTIO_BLK_F_FLUSH)) {
        const r = await drv.submit({ op: 'flush' });
        sum.flush = r.status === VIRTIO_BLK_S_OK ? 'ok' : r.status === VIRTIO_BLK_S_UNSUPP ? 'unsupported' : 'failed';
        if (r.status !== VIRTIO_BLK_S_OK) sum.errors++;
      }
    }
    await pool(chunks, depth, async (s) => {
      const r = await drv.submit({
        op: 'read', sector: s, length: o.requestBytes,
        inspect: (_u8, dv, off) => checkPattern(dv, off, s, reqSectors, g),
      });
      sum.reads++;
      sum.bytesRead += o.requestBytes;
      if (r.status !== VIRTIO_BLK_S_OK) sum.errors++;
      else if (!drv.readOnly && r.inspected !== -1) {
        sum.mismatches++;
        if (sum.mismatchAt.length < 8) sum.mismatchAt.push(s + (r.inspected as number));
      }
    });
    sum.passes++;
    o.onPass?.(sum);
  } while (performance.now() < end);
  sum.seconds = (performance.now() - t0) / 1000;
  sum.iops = (sum.writes + sum.reads) / sum.seconds;

  if (!drv.readOnly && drv.has(VIRTIO_BLK_F_WRITE_ZEROES)) {
    const s = chunks[chunks.length - 1]!;
    const r = await drv.submit({ op: 'write-zeroes', sector: s, sectors: reqSectors });
    if (r.status === VIRTIO_BLK_S_OK) {
      const back = await drv.submit({ op: 'read', sector: s, length: o.requestBytes, inspect: (_u8, dv, off) => checkPattern(dv, off, s, reqSectors, -1) });
      sum.writeZeroes = back.status === VIRTIO_BLK_S_OK && back.inspected === -1 ? 'ok' : 'read-back-mismatch';
    } else {
      sum.writeZeroes = r.status === VIRTIO_BLK_S_UNSUPP ? 'unsupported' : 'failed';
    }
  }
  if (!drv.readOnly && drv.has(VIRTIO_BLK_F_DISCARD)) {
    const r = await drv.submit({ op: 'discard', sector: chunks[0]!, sectors: reqSectors });
    sum.discard = r.status === VIRTIO_BLK_S_OK ? 'ok' : r.status === VIRTIO_BLK_S_UNSUPP ? 'unsupported' : 'failed';
  }
  const id = await drv.submit({
    op: 'get-id',
    inspect: (u8, _dv, off, len) => {
      let e = off;
      while (e < off + len && u8[e] !== 0) e++;
      return Buffer.from(u8.subarray(off, e)).toString('latin1');
    },
  });
  sum.getId = id.status === VIRTIO_BLK_S_OK ? (id.inspected as string | undefined) ?? '' : null;
  if (capacity > 0) {
    const r = await drv.submit({ op: 'read', sector: capacity, length: SECTOR_SIZE });
    sum.outOfRangeRejected = r.status === VIRTIO_BLK_S_IOERR;
  }
  return sum;
}
