// `vhost-ts blk` over a real vhost-user socket, driven by the built-in
// front-end's blk personality: patterns written with many requests in flight
// on every queue read back identical across queue counts, ring kinds and
// request sizes; refused and malformed requests get the right status and the
// daemon keeps serving; SIGHUP resizes; SIGTERM exits promptly and cleanly.
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { native } from '@vhost-ts/native';
import { BLK_CONFIG_SIZE, BLK_DRIVER_FEATURES, BlkDriver as FrontBlk, FrontendDevice, VhostUserClient, blkVerify, decodeBlkConfig, openBlkDevice } from '@vhost-ts/frontend';
import { ManagedProcess, makeTempDir, removeDir, socketPath } from '@vhost-ts/peers';
import { createUsedBuffer } from '@vhost-ts/virtio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** A loop device can be set up here (root, losetup, /dev/loop-control). */
const canLoop = process.getuid?.() === 0 && spawnSync('losetup', ['--version']).status === 0 && spawnSync('test', ['-e', '/dev/loop-control']).status === 0;

const MAIN = path.resolve(import.meta.dirname, '../packages/cli/dist/main.js');
const MiB = 1024 * 1024;
const DISK = 16 * MiB;

let dir = '';
beforeAll(async () => {
  dir = await makeTempDir('blk-fe');
});
afterAll(async () => {
  await removeDir(dir);
});

interface Daemon {
  proc: ManagedProcess;
  sock: string;
  file: string;
}

let seq = 0;
async function daemon(args: string[], fileBytes = DISK): Promise<Daemon> {
  const n = seq++;
  const file = path.join(dir, `disk${n}.img`);
  writeFileSync(file, new Uint8Array(0));
  truncateSync(file, fileBytes);
  const sock = socketPath(dir, `blk${n}.sock`);
  const proc = new ManagedProcess(process.execPath, [MAIN, 'blk', `--socket-path=${sock}`, `--blk-file=${file}`, '--serial=vhost-ts-test', ...args], {
    name: 'vhost-ts blk',
  });
  await proc.waitForOutput(/listening/, { timeoutMs: 15_000 });
  return { proc, sock, file };
}

async function open(d: Daemon, o: { queues?: number; packed?: boolean; indirect?: boolean } = {}): Promise<FrontendDevice> {
  return openBlkDevice({ socketPath: d.sock, queues: o.queues ?? 1, packed: o.packed ?? false, indirect: o.indirect ?? false, eventIdx: true, queueSize: 128 });
}

describe('vhost-ts blk with the built-in front-end over a unix socket', () => {
  it.each([1, 2, 4])('%i queue(s), 32 requests in flight per queue: patterns read back identical for split and packed rings and 512 B .. 64 KiB requests', async (queues) => {
    const d = await daemon([`--queues=${queues}`, '--stats-interval=0.2']);
    try {
      for (const packed of [false, true]) {
        for (const requestBytes of [512, 4096, 65536]) {
          const dev = await open(d, { queues, packed, indirect: requestBytes === 4096 });
          try {
            const cfg = decodeBlkConfig(dev.config);
            expect(cfg.capacity).toBe(DISK / 512);
            expect(cfg.numQueues).toBe(queues);
            const drv = new FrontBlk(dev, { depth: 32, maxRequestBytes: 65536 }); // 32 requests in flight per queue
            const sum = await blkVerify(drv, { requestBytes, sectors: (requestBytes === 512 ? 1 : 4) * (MiB / 512) });
            const where = `queues=${queues} packed=${packed} size=${requestBytes}`;
            expect({ where, mismatches: sum.mismatches, errors: sum.errors }).toEqual({ where, mismatches: 0, errors: 0 });
            expect(sum.writes).toBeGreaterThan(0);
            expect(sum.reads).toBe(sum.writes);
            expect([sum.flush, sum.writeZeroes, sum.discard, sum.getId, sum.outOfRangeRejected]).toEqual(['ok', 'ok', 'ok', 'vhost-ts-test', true]);
            drv.abortAll();
          } finally {
            await dev.close();
          }
        }
      }
      // The live view printed per-queue rows with rates.
      const m = await d.proc.waitForOutput(new RegExp(`"q${queues - 1}":\\{"iops":[1-9]`), { timeoutMs: 5000 });
      expect(m[0]).toContain('"iops"');
    } finally {
      const st = await d.proc.close();
      expect(st.code).toBe(0);
    }
  }, 120_000);

  it('refused requests get IOERR (out of range, misaligned to a 4 KiB block, writes to a read-only disk) and the daemon keeps serving', async () => {
    const d = await daemon(['--block-size=4096']);
    const ro = await daemon(['--read-only']);
    try {
      const dev = await open(d);
      try {
        const cfg = decodeBlkConfig(dev.config);
        expect(cfg.blkSize).toBe(4096);
        const drv = new FrontBlk(dev, { depth: 4, maxRequestBytes: 65536 });
        expect((await drv.submit({ op: 'read', sector: 1, length: 4096 })).status).toBe(1);
        expect((await drv.submit({ op: 'write', sector: 8, length: 512, data: new Uint8Array(512) })).status).toBe(1);
        expect((await drv.submit({ op: 'read', sector: DISK / 512, length: 4096 })).status).toBe(1);
        expect((await drv.submit({ op: 'write-zeroes', sector: DISK / 512 - 8, sectors: 16 })).status).toBe(1);
        const r = await drv.submit({ op: 'write', sector: 8, length: 4096, data: new Uint8Array(4096).fill(0x5a) });
        expect([r.status, r.usedLen]).toEqual([0, 1]);
        const back = await drv.submit({ op: 'read', sector: 8, length: 4096, inspect: (u8, _dv, off, len) => u8.subarray(off, off + len).every((b) => b === 0x5a) });
        expect([back.status, back.usedLen, back.inspected]).toEqual([0, 4097, true]);
        drv.abortAll();
      } finally {
        await dev.close();
      }
      const rdev = await open(ro);
      try {
        expect((rdev.features >> 5n) & 1n).toBe(1n); // VIRTIO_BLK_F_RO
        expect((rdev.features >> 14n) & 1n).toBe(0n); // no WRITE_ZEROES on a read-only disk
        const drv = new FrontBlk(rdev, { depth: 4 });
        expect((await drv.submit({ op: 'write', sector: 0, length: 4096, data: new Uint8Array(4096).fill(1) })).status).toBe(1);
        expect((await drv.submit({ op: 'read', sector: 0, length: 4096 })).status).toBe(0);
        expect((await drv.submit({ op: 'flush' })).status).toBe(0);
        drv.abortAll();
      } finally {
        await rdev.close();
      }
      expect(readFileSync(ro.file).subarray(0, 4096).every((b) => b === 0)).toBe(true);
    } finally {
      expect((await d.proc.close()).code).toBe(0);
      expect((await ro.proc.close()).code).toBe(0);
    }
  }, 60_000);

  it('malformed chains (no status byte, header in a writable buffer, unknown type) get length 0 / IOERR / UNSUPP; the queue keeps working', async () => {
    const d = await daemon([]);
    try {
      const dev = await open(d);
      try {
        const v = dev.vrings[0]!;
        const area = dev.memory.allocator.alloc(4096, 4096);
        const loc = dev.memory.locate(area.gpa, 4096);
        const u8 = loc.region.u8;
        const dv = loc.region.dv;
        const used = createUsedBuffer<number>();
        const run = async (addrs: number[], lens: number[], out: number): Promise<number> => {
          u8.fill(0xee, loc.offset + 256, loc.offset + 512);
          expect(v.ring.add(addrs, lens, out, addrs.length - out, 7)).toBeGreaterThanOrEqual(0);
          if (v.ring.needsKick()) dev.kick(0);
          const end = Date.now() + 5000;
          while (!v.ring.getUsed(used)) {
            if (Date.now() > end) throw new Error('no completion');
            await new Promise((r) => setTimeout(r, 2));
          }
          return used.len;
        };
        const hdr = area.gpa;
        const status = area.gpa + 256;
        dv.setUint32(loc.offset, 0, true); // IN
        dv.setUint32(loc.offset + 8, 0, true);
        // Only readable buffers: nowhere to put a status byte.
        expect(await run([hdr], [16], 1)).toBe(0);
        // The header in a device-writable buffer.
        expect(await run([hdr, status], [16, 1], 0)).toBe(1);
        expect(u8[loc.offset + 256]).toBe(1);
        // An unknown request type.
        dv.setUint32(loc.offset, 99, true);
        expect(await run([hdr, status], [16, 1], 1)).toBe(1);
        expect(u8[loc.offset + 256]).toBe(2);
        // Still serving: a good write and read through the blk personality.
        const drv = new FrontBlk(dev, { depth: 4 });
        const sum = await blkVerify(drv, { requestBytes: 4096, sectors: 256 });
        expect([sum.mismatches, sum.errors]).toEqual([0, 0]);
        drv.abortAll();
      } finally {
        await dev.close();
      }
    } finally {
      expect((await d.proc.close()).code).toBe(0);
    }
  }, 60_000);

  it('SIGHUP after the file grew: the config space shows the new capacity and the new sectors are served', async () => {
    const d = await daemon([], 4 * MiB);
    try {
      const dev = await open(d);
      try {
        const drv = new FrontBlk(dev, { depth: 4 });
        const old = 4 * MiB / 512;
        expect((await drv.submit({ op: 'read', sector: old, length: 4096 })).status).toBe(1);
        truncateSync(d.file, 8 * MiB);
        const mark = d.proc.output.position;
        d.proc.signal('SIGHUP');
        await d.proc.waitForOutput(/capacity 4194304 -> 8388608/, { since: mark, timeoutMs: 5000 });
        expect(decodeBlkConfig(await dev.client.getConfig(0, 60)).capacity).toBe(8 * MiB / 512);
        const w = await drv.submit({ op: 'write', sector: old, length: 4096, data: new Uint8Array(4096).fill(0x77) });
        expect(w.status).toBe(0);
        expect(readFileSync(d.file).subarray(4 * MiB, 4 * MiB + 4096).every((b) => b === 0x77)).toBe(true);
        drv.abortAll();
      } finally {
        await dev.close();
      }
    } finally {
      expect((await d.proc.close()).code).toBe(0);
    }
  }, 60_000);

  it('CONFIG_WCE: the guest switches to write-through and back with SET_CONFIG; other fields are refused; I/O keeps working', async () => {
    const d = await daemon([]);
    try {
      const client = await VhostUserClient.connect(d.sock, { timeoutMs: 5000 });
      const dev = await FrontendDevice.start(client, {
        vrings: 1,
        queueSize: 128,
        deviceFeatures: BLK_DRIVER_FEATURES | (1n << 11n), // + VIRTIO_BLK_F_CONFIG_WCE
        requiredFeatures: 1n << 11n,
        configSize: BLK_CONFIG_SIZE,
      });
      try {
        expect(dev.config[32]).toBe(1); // write-back
        await dev.client.setConfig(32, Uint8Array.of(0));
        await d.proc.waitForOutput(/cache mode write-through/, { timeoutMs: 5000 });
        expect((await dev.client.getConfig(0, 60))[32]).toBe(0);
        const drv = new FrontBlk(dev, { depth: 8 });
        const sum = await blkVerify(drv, { requestBytes: 4096, sectors: 512 });
        expect([sum.mismatches, sum.errors, sum.writeZeroes]).toEqual([0, 0, 'ok']);
        await dev.client.setConfig(32, Uint8Array.of(1));
        expect((await dev.client.getConfig(0, 60))[32]).toBe(1);
        // The capacity is not the guest's to write.
        await expect(dev.client.setConfig(0, new Uint8Array(8))).rejects.toThrow();
        expect(decodeBlkConfig(await dev.client.getConfig(0, 60)).capacity).toBe(DISK / 512);
        drv.abortAll();
      } finally {
        await dev.close();
      }
    } finally {
      expect((await d.proc.close()).code).toBe(0);
    }
  }, 60_000);

  it('SIGTERM with a front-end connected and I/O running: exit status 0 within 2 s, socket removed', async () => {
    const d = await daemon(['--queues=2']);
    const dev = await open(d, { queues: 2 });
    const drv = new FrontBlk(dev, { depth: 16 });
    const running = blkVerify(drv, { requestBytes: 4096, sectors: 8192, seconds: 30 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    d.proc.signal('SIGTERM');
    const st = await d.proc.waitForExit(5000);
    const took = Date.now() - t0;
    drv.abortAll();
    await running;
    await dev.close({ graceful: false });
    await d.proc.close();
    expect(st).toEqual({ code: 0, signal: null });
    expect(took).toBeLessThan(2000);
    expect(spawnSync('test', ['-e', d.sock]).status).not.toBe(0);
  }, 60_000);

  it('--fd=N serves an inherited listening socket; --client dials a listening front-end', async () => {
    const file = path.join(dir, 'fd.img');
    writeFileSync(file, new Uint8Array(0));
    truncateSync(file, 4 * MiB);
    // --fd: the socket is created by the parent and handed down as fd 3.
    const sock = socketPath(dir, 'inherited.sock');
    const lfd = native.unixListen(sock);
    const child = spawn(process.execPath, [MAIN, 'blk', '--fd=3', `--blk-file=${file}`, '--stats-interval=0'], { stdio: ['ignore', 'ignore', 'pipe', lfd] });
    native.close(lfd);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      const dev = await openBlkDevice({ socketPath: sock, queueSize: 128 });
      try {
        const sum = await blkVerify(new FrontBlk(dev, { depth: 8 }), { requestBytes: 4096, sectors: 1024 });
        expect([sum.mismatches, sum.errors, sum.writes > 0]).toEqual([0, 0, true]);
      } finally {
        await dev.close();
      }
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    // --client: the front-end listens, the back-end connects.
    const csock = socketPath(dir, 'client.sock');
    const devP = openBlkDevice({ socketPath: csock, server: true, queueSize: 128, timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 200));
    const be = new ManagedProcess(process.execPath, [MAIN, 'blk', '--client', `--socket-path=${csock}`, `--blk-file=${file}`, '--stats-interval=0'], { name: 'vhost-ts blk --client' });
    try {
      const dev = await devP;
      try {
        const sum = await blkVerify(new FrontBlk(dev, { depth: 8 }), { requestBytes: 4096, sectors: 1024 });
        expect([sum.mismatches, sum.errors, sum.writes > 0]).toEqual([0, 0, true]);
      } finally {
        await dev.close();
      }
    } finally {
      expect((await be.close()).code, be.describe()).toBe(0);
    }
  }, 60_000);

  it.skipIf(!canLoop)('a block device as the backing store: capacity from its size, patterns read back (needs root and losetup)', async () => {
    const img = path.join(dir, 'loop.img');
    writeFileSync(img, new Uint8Array(0));
    truncateSync(img, 6 * MiB);
    const lo = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' });
    expect(lo.status, lo.stderr).toBe(0);
    const loop = lo.stdout.trim();
    try {
      const sock = socketPath(dir, 'loop.sock');
      const be = new ManagedProcess(process.execPath, [MAIN, 'blk', `--socket-path=${sock}`, `--blk-file=${loop}`, '--stats-interval=0'], { name: 'vhost-ts blk (loop)' });
      try {
        await be.waitForOutput(`blk back-end: ${loop}, ${6 * MiB} bytes`, { timeoutMs: 15_000 });
        const dev = await open({ proc: be, sock, file: loop });
        try {
          expect(decodeBlkConfig(dev.config).capacity).toBe((6 * MiB) / 512);
          const sum = await blkVerify(new FrontBlk(dev, { depth: 8 }), { requestBytes: 65536, sectors: (6 * MiB) / 512 });
          expect([sum.mismatches, sum.errors, sum.flush, sum.outOfRangeRejected]).toEqual([0, 0, 'ok', true]);
        } finally {
          await dev.close();
        }
      } finally {
        expect((await be.close()).code, be.describe()).toBe(0);
      }
    } finally {
      spawnSync('losetup', ['-d', loop]);
    }
  }, 60_000);

  it('--print-capabilities and usage errors', () => {
    const caps = spawnSync(process.execPath, [MAIN, 'blk', '--print-capabilities'], { encoding: 'utf8' });
    expect(caps.status).toBe(0);
    expect(JSON.parse(caps.stdout)).toEqual({ type: 'blk', features: ['read-only', 'blk-file'] });
    const noFile = spawnSync(process.execPath, [MAIN, 'blk', '--socket-path=/tmp/x.sock'], { encoding: 'utf8' });
    expect(noFile.status).toBe(2);
    expect(noFile.stderr).toMatch(/--blk-file/);
    const badBs = spawnSync(process.execPath, [MAIN, 'blk', '--socket-path=/tmp/x.sock', '--blk-file=/x', '--block-size=1000'], { encoding: 'utf8' });
    expect(badBs.status).toBe(2);
    const missing = spawnSync(process.execPath, [MAIN, 'blk', `--socket-path=${path.join(dir, 'm.sock')}`, `--blk-file=${path.join(dir, 'nope.img')}`], { encoding: 'utf8' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nope\.img/);
  });
});
