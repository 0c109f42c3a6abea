import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  addSeals,
  close,
  eventfdCreate,
  fstatSize,
  ftruncate,
  getSeals,
  liveMappings,
  memfdCreate,
  mmap,
  pageSize,
  release,
  releasedMappings,
} from '../src/index.js';
import {
  MiB,
  backTo,
  gc,
  held,
  nativeError,
  rssBytes,
  TestWorker,
  type Held,
} from './util.js';

/** A memfd of `size` bytes mapped whole; the fd stays open (caller closes). */
function mappedMemfd(name: string, size: number): { fd: number; sab: SharedArrayBuffer } {
  const fd = memfdCreate(name);
  ftruncate(fd, size);
  return { fd, sab: mmap(fd, 0, size) };
}

function mapsMention(name: string): boolean {
  return readFileSync('/proc/self/maps', 'utf8').includes(`memfd:${name}`);
}

let baseline: Held;
beforeAll(() => {
  baseline = held();
});
afterAll(async () => {
  expect(await backTo(baseline)).toEqual(baseline);
});

describe('mmap into a SharedArrayBuffer shared with a worker', () => {
  it('is shared both ways: the worker reads what main wrote, main reads what the worker wrote', async () => {
    const { fd, sab } = mappedMemfd('vhost-both-ways', 1 * MiB);
    const u8 = new Uint8Array(sab);
    let sum = 0;
    for (let i = 0; i < 4096; i++) {
      u8[i] = (i * 13 + 1) & 0xff;
      sum = (sum + (u8[i] ?? 0) * (i + 1)) % 0x7fffffff;
    }
    const worker = new TestWorker('memory-worker.mjs', { sab, mode: 'both-ways' });
    const seen = await worker.next<{ isShared: boolean; byteLength: number; sum: number }>();
    expect(seen).toEqual({ isShared: true, byteLength: 1 * MiB, sum });
    for (let i = 0; i < 4096; i++) expect(u8[4096 + i]).toBe((i * 7 + 3) & 0xff);
    expect(u8[u8.length - 1]).toBe(0x5a);
    // The worker's writes are in the file, not just in this SAB: a second
    // mapping of page 1 (offset 4096) sees them.
    const page1 = new Uint8Array(mmap(fd, pageSize, pageSize));
    expect(page1[0]).toBe(3);
    expect(page1[1]).toBe(10);
    expect(await worker.exit()).toBe(0);
    release(page1.buffer as SharedArrayBuffer);
    release(sab);
    close(fd);
  });

  it('supports Atomics.wait/notify across threads in both directions', async () => {
    const { fd, sab } = mappedMemfd('vhost-atomics', pageSize);
    close(fd);
    const i32 = new Int32Array(sab);
    const worker = new TestWorker('memory-worker.mjs', { sab, mode: 'atomics' });
    expect(await worker.next()).toBe('waiting');
    // Notify word 0 until our notify actually woke a waiter: proof that the
    // worker waits on this very memory.
    let woken = 0;
    const end = Date.now() + 5000;
    while (woken === 0 && Date.now() < end) {
      woken = Atomics.notify(i32, 0, 1);
      if (woken === 0) await new Promise((r) => setTimeout(r, 1));
    }
    expect(woken).toBe(1);
    // Now the worker wakes us: block this thread on word 2, which stays 0
    // until the worker's notify found us waiting.
    const result = Atomics.wait(i32, 2, 0, 5000);
    expect(result).toBe('ok');
    const report = await worker.next<{ woke: string; notified: number }>();
    expect(report).toEqual({ woke: 'ok', notified: 1 });
    expect(Atomics.load(i32, 2)).toBe(1);
    expect(await worker.exit()).toBe(0);
    release(sab);
  });

  it('survives the main thread dropping its references before the worker, and unmaps once both are gone', async () => {
    const before = liveMappings();
    const start = (): TestWorker => {
      const { fd, sab } = mappedMemfd('vhost-drop', 256 * 1024);
      close(fd);
      return new TestWorker('memory-worker.mjs', { sab, mode: 'late-write' });
    };
    const worker = start();
    expect(await worker.next()).toBe('holding');
    expect(liveMappings()).toBe(before + 1);
    for (let i = 0; i < 3; i++) gc();
    await new Promise((r) => setTimeout(r, 50));
    // The worker still holds the SAB: the mapping must still be there.
    expect(liveMappings()).toBe(before + 1);
    expect(mapsMention('vhost-drop')).toBe(true);
    worker.post('write');
    expect(await worker.next()).toEqual({ ok: true });
    expect(await worker.exit()).toBe(0);
    // With the worker's isolate gone and ours collected, the deleter munmaps.
    const after = await backTo({ ...held(), live: before });
    expect(after.live).toBe(before);
    expect(mapsMention('vhost-drop')).toBe(false);
  });
});

describe('release', () => {
  it('makes RSS drop at once and leaves a zero-reading view behind', () => {
    const size = 64 * MiB;
    const { fd, sab } = mappedMemfd('vhost-rss', size);
    const u8 = new Uint8Array(sab);
    u8.fill(1); // touch every page
    const touched = rssBytes();
    const live = liveMappings();
    release(sab);
    const released = rssBytes();
    expect(touched - released).toBeGreaterThanOrEqual(56 * MiB);
    expect(liveMappings()).toBe(live - 1);
    expect(releasedMappings()).toBeGreaterThanOrEqual(1);
    // Stale views read zeros, and their writes no longer reach the file.
    expect(u8[0]).toBe(0);
    expect(u8[size - 1]).toBe(0);
    u8[0] = 9;
    const again = new Uint8Array(mmap(fd, 0, pageSize));
    expect(again[0]).toBe(1);
    release(again.buffer as SharedArrayBuffer);
    close(fd);
  });

  it('is idempotent and refuses buffers that mmap did not make', () => {
    const { fd, sab } = mappedMemfd('vhost-release-twice', pageSize);
    close(fd);
    const live = liveMappings();
    release(sab);
    release(sab);
    expect(liveMappings()).toBe(live - 1);
    const foreign = nativeError(() => release(new SharedArrayBuffer(pageSize)));
    expect(foreign).toMatchObject({ code: 'EINVAL', errno: 22, syscall: 'release' });
    expect(foreign.message).toBe('release: EINVAL (Invalid argument)');
    expect(() => release(new ArrayBuffer(8) as unknown as SharedArrayBuffer)).toThrow(TypeError);
  });
});

describe('mmap arguments', () => {
  it('maps at a page-aligned file offset', () => {
    const { fd, sab } = mappedMemfd('vhost-offset', 3 * pageSize);
    new Uint8Array(sab).fill(0x11, 0, pageSize).fill(0x22, pageSize, 2 * pageSize).fill(0x33, 2 * pageSize);
    const mid = mmap(fd, pageSize, pageSize);
    expect(mid.byteLength).toBe(pageSize);
    expect(new Uint8Array(mid)[0]).toBe(0x22);
    expect(new Uint8Array(mid)[pageSize - 1]).toBe(0x22);
    release(mid);
    release(sab);
    close(fd);
  });

  it('rejects bad arguments with TypeError/RangeError before any syscall', () => {
    const fd = memfdCreate('vhost-args');
    ftruncate(fd, 2 * pageSize);
    const live = liveMappings();
    expect(() => mmap(fd, 1, pageSize)).toThrow(RangeError);
    expect(() => mmap(fd, 0, 0)).toThrow(RangeError);
    expect(() => mmap(-1, 0, pageSize)).toThrow(RangeError);
    expect(() => mmap(fd, 0.5, pageSize)).toThrow(RangeError);
    expect(() => mmap('3' as unknown as number, 0, pageSize)).toThrow(TypeError);
    expect(() => (mmap as unknown as (fd: number) => unknown)(fd)).toThrow(TypeError);
    try {
      mmap(fd, 100, pageSize);
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
      expect((e as Error).message).toMatch(/^mmap: "offset" must be a multiple of the page size/);
    }
    expect(liveMappings()).toBe(live);
    close(fd);
  });
});

describe('size and seal checks', () => {
  it('fstatSize reports a memfd shorter than the region wants (the control plane refuses it)', () => {
    const fd = memfdCreate('vhost-short');
    ftruncate(fd, 2 * pageSize);
    const region = { mmapOffset: 0, size: 2 * pageSize };
    expect(fstatSize(fd)).toBeGreaterThanOrEqual(region.mmapOffset + region.size);
    ftruncate(fd, pageSize); // the front-end shrinks it
    expect(fstatSize(fd)).toBe(pageSize);
    expect(fstatSize(fd) >= region.mmapOffset + region.size).toBe(false);
    close(fd);
  });

  it('reads and adds seals; a sealed memfd cannot shrink', () => {
    const fd = memfdCreate('vhost-seals');
    ftruncate(fd, pageSize);
    expect(getSeals(fd)).toBe(0);
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
    expect(getSeals(fd)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
    expect(nativeError(() => ftruncate(fd, 0))).toMatchObject({ code: 'EPERM', syscall: 'ftruncate' });
    expect(fstatSize(fd)).toBe(pageSize);
    close(fd);
    const efd = eventfdCreate();
    expect(nativeError(() => getSeals(efd))).toMatchObject({ code: 'EINVAL', syscall: 'fcntl' });
    close(efd);
  });
});
