import { describe, expect, it } from 'vitest';
import { Chain, DirtyLog, SplitDeviceRing, SplitDriverRing } from '../src/index.js';
import { BUF_HIGH, BUF_LOW, HIGH, MID2, bytes, makeMemory, splitLayout } from './helpers.js';

function makeLog() {
  // Covers 8 GiB of GPA: 8 GiB / 4 KiB pages / 8 bits = 256 KiB.
  return new DirtyLog(new SharedArrayBuffer(256 * 1024));
}

describe('dirty log', () => {
  it('sets one bit per 4 KiB page with atomic OR, and counts pages beyond the bitmap', () => {
    const log = new DirtyLog(new SharedArrayBuffer(4));
    log.logRange(0, 1);
    log.logRange(4096 * 9 + 100, 4096); // pages 9 and 10
    expect(Array.from(log.bitmap)).toEqual([0b1, 0b110, 0, 0]);
    expect(log.dirtyPages()).toEqual([0, 9 * 4096, 10 * 4096]);
    log.logRange(4096 * 31, 4096 * 2); // page 31 in range, 32 beyond
    expect(log.bitmap[3]).toBe(0x80);
    expect(log.outOfRange).toBe(1);
    log.logRange(100, 0);
    expect(log.isDirty(4096)).toBe(false);
  });

  it('logs guest writes made through memory and chain helpers, only when attached', () => {
    const { mem } = makeMemory();
    const log = makeLog();
    mem.write(BUF_LOW, bytes(8, 1), 0, 8);
    expect(log.dirtyPages()).toEqual([]);
    mem.setDirtyLog(log);
    mem.write(BUF_HIGH + 4090, bytes(8, 1), 0, 8); // two pages
    expect(log.dirtyPages()).toEqual([BUF_HIGH, BUF_HIGH + 4096]);
    mem.fill(MID2.gpa, 0, 1);
    expect(log.isDirty(MID2.gpa)).toBe(true);
    const pagesBefore = log.dirtyPages().length;
    const buf = new Uint8Array(8);
    mem.read(BUF_LOW, buf, 0, 8); // reads never log
    expect(log.dirtyPages().length).toBe(pagesBefore);
  });

  it('logs writes into chains and used-ring updates at the log address', () => {
    const { mem } = makeMemory();
    const cfg = splitLayout(8);
    const drv = new SplitDriverRing<number>(mem, cfg);
    const dev = new SplitDeviceRing(mem, cfg);
    const log = makeLog();
    mem.setDirtyLog(log);
    drv.add([BUF_LOW, BUF_HIGH + 0x3000], [16, 8192], 1, 1, 1);
    drv.publish();
    const c = new Chain();
    expect(dev.pop(c)).toBe(true);
    log.bitmap.fill(0);
    // Payload written into the guest: logged (two pages from BUF_HIGH + 0x3000 + 4000).
    c.write(4000, bytes(200, 2), 0, 200);
    expect(log.dirtyPages()).toEqual([BUF_HIGH + 0x3000, BUF_HIGH + 0x4000]);
    log.bitmap.fill(0);
    // Without a used log address, used-ring writes are not logged.
    dev.push(c.head, 200);
    dev.flush();
    expect(log.dirtyPages()).toEqual([]);
    // With LOG set: logged at log_guest_addr (here a deliberately different GPA).
    const logGpa = HIGH.gpa + 0x80000;
    dev.setUsedLog(logGpa);
    drv.add([BUF_LOW], [16], 1, 0, 2);
    drv.publish();
    dev.pop(c);
    dev.push(c.head, 0);
    dev.flush();
    expect(log.dirtyPages()).toEqual([logGpa]);
    log.bitmap.fill(0);
    dev.disableNotifications();
    expect(log.dirtyPages()).toEqual([logGpa]); // used.flags
    // Chain-to-chain copies log the destination.
    drv.add([BUF_LOW], [64], 1, 0, 3);
    drv.add([MID2.gpa + 0x5000], [64], 0, 1, 4);
    drv.publish();
    const tx = new Chain();
    const rx = new Chain();
    dev.pop(tx);
    dev.pop(rx);
    log.bitmap.fill(0);
    expect(tx.copyTo(rx, 64)).toBe(64);
    expect(log.dirtyPages()).toEqual([MID2.gpa + 0x5000]);
  });
});

describe('dirty log, packed ring', () => {
  it('logs used descriptors at logGpa + slot * 16 and device event area writes', async () => {
    const { PackedDeviceRing, PackedDriverRing } = await import('../src/index.js');
    const { packedLayout } = await import('./helpers.js');
    const { mem } = makeMemory();
    const cfg = packedLayout(512);
    const drv = new PackedDriverRing<number>(mem, cfg);
    const dev = new PackedDeviceRing(mem, cfg, { vringBase: drv.vringBase, usedLogGpa: cfg.descGpa });
    const log = makeLog();
    mem.setDirtyLog(log);
    const c = new Chain();
    // Move 300 one-descriptor chains so used descriptors land in pages 0 and 1 of the ring.
    for (let i = 0; i < 300; i++) {
      drv.add([BUF_LOW], [8], 1, 0, i);
      drv.publish();
      dev.pop(c);
      dev.pushChain(c, 0);
      dev.flush();
    }
    expect(log.dirtyPages()).toEqual([cfg.descGpa, cfg.descGpa + 4096]);
    log.bitmap.fill(0);
    dev.enableNotifications();
    expect(log.dirtyPages()).toEqual([Math.floor(cfg.deviceEventGpa / 4096) * 4096]);
    log.bitmap.fill(0);
    dev.setUsedLog(null);
    drv.add([BUF_LOW], [8], 1, 0, 1);
    drv.publish();
    dev.pop(c);
    dev.pushChain(c, 0);
    dev.flush();
    expect(log.dirtyPages()).toEqual([]);
  });
});
