/**
 * A hostile guest against the `vhost-ts blk` daemon (child process, sync file
 * I/O in the queue workers): requests beyond the capacity, sector arithmetic
 * that overflows, writes crossing the end, short headers, a status byte the
 * device cannot write, huge GET_ID buffers, discard/write-zeroes segments out
 * of range, buffers in GPA holes. The backing file must never change outside
 * the valid writes (nor grow), every request must complete with a status or
 * break the ring (NEEDS_RESET), the daemon must survive, and a well-formed
 * request afterwards on another queue must still work.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceStatus } from '@vhost-ts/vhost/protocol';
import { VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES } from '@vhost-ts/virtio';
import { ensureBuilt } from './lib/build.js';
import { HostileGuest } from './lib/hostile-guest.js';

const CAPACITY = 1 << 20; // 2048 sectors
const SECTORS = CAPACITY / 512;
const ROOT = path.resolve(import.meta.dirname, '../..');

let dir: string;
let file: string;
let socketPath: string;
let daemon: ReturnType<typeof spawn>;
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
let alive = true;
let stderr = '';
let pattern: Buffer;

beforeAll(async () => {
  await ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-blk-rel-'));
  file = path.join(dir, 'disk.img');
  pattern = Buffer.alloc(CAPACITY);
  for (let i = 0; i < CAPACITY; i++) pattern[i] = (i * 31 + 7) & 0xff;
  writeFileSync(file, pattern);
  socketPath = path.join(dir, 'blk.sock');
  const main = path.join(ROOT, 'packages/cli/dist/main.js');
  daemon = spawn(process.execPath, [main, 'blk', `--socket-path=${socketPath}`, `--blk-file=${file}`, '--queues=2', '--stats-interval=0', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
  daemon.stderr!.setEncoding('utf8');
  daemon.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  exited = new Promise((res) => daemon.once('exit', (code, signal) => res({ code, signal })));
  void exited.then(() => (alive = false));
  const end = Date.now() + 15_000;
  while (!existsSync(socketPath) && Date.now() < end && alive) await new Promise((r) => setTimeout(r, 20));
  expect(existsSync(socketPath), `vhost-ts blk did not start: ${stderr}`).toBe(true);
}, 200_000);

afterAll(async () => {
  if (daemon !== undefined) {
    if (alive) daemon.kill('SIGTERM');
    const t = setTimeout(() => daemon.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  rmSync(dir, { recursive: true, force: true });
});

interface Req {
  name: string;
  type: number;
  sector: bigint;
  /** Data descriptors: [len, writable]; a `gpa` of 'hole' puts it in a GPA hole. */
  data: Array<{ len: number; writable: boolean; at?: 'hole' }>;
  /** Status descriptor writable (the normal case) or not. */
  statusWritable?: boolean;
  /** Header descriptor length (default 16). */
  headerLen?: number;
  /** Payload of a discard/write-zeroes segment: [sector, numSectors, flags]. */
  segment?: [bigint, number, number];
}

const U64_MAX = (1n << 64n) - 1n;
const BAD: Req[] = [
  { name: 'write one sector past the end', type: VIRTIO_BLK_T_OUT, sector: BigInt(SECTORS), data: [{ len: 512, writable: false }] },
  { name: 'write crossing the end', type: VIRTIO_BLK_T_OUT, sector: BigInt(SECTORS - 1), data: [{ len: 1024, writable: false }] },
  { name: 'write at sector 2^55 (offset beyond 2^64 / 2^53)', type: VIRTIO_BLK_T_OUT, sector: 1n << 55n, data: [{ len: 512, writable: false }] },
  { name: 'write at sector 2^64-1 (sector * 512 wraps)', type: VIRTIO_BLK_T_OUT, sector: U64_MAX, data: [{ len: 512, writable: false }] },
  { name: 'write of 511 bytes (not a sector multiple)', type: VIRTIO_BLK_T_OUT, sector: 0n, data: [{ len: 511, writable: false }] },
  { name: 'read past the end', type: VIRTIO_BLK_T_IN, sector: BigInt(SECTORS + 8), data: [{ len: 512, writable: true }] },
  { name: 'read at sector 2^64-1', type: VIRTIO_BLK_T_IN, sector: U64_MAX, data: [{ len: 4096, writable: true }] },
  { name: 'GET_ID into a 4 GiB buffer', type: VIRTIO_BLK_T_GET_ID, sector: 0n, data: [{ len: 0xffff_ffff, writable: true }] },
  { name: 'discard beyond the end', type: VIRTIO_BLK_T_DISCARD, sector: 0n, data: [{ len: 16, writable: false }], segment: [BigInt(SECTORS - 1), 0xffff_ffff, 0] },
  { name: 'write-zeroes with sector 2^64-1', type: VIRTIO_BLK_T_WRITE_ZEROES, sector: 0n, data: [{ len: 16, writable: false }], segment: [U64_MAX, 8, 1] },
  { name: 'header of 8 bytes', type: VIRTIO_BLK_T_OUT, sector: 0n, data: [{ len: 512, writable: false }], headerLen: 8 },
  { name: 'status byte not writable', type: VIRTIO_BLK_T_OUT, sector: 4n, data: [{ len: 512, writable: false }], statusWritable: false },
  { name: 'write data in a GPA hole', type: VIRTIO_BLK_T_OUT, sector: 8n, data: [{ len: 512, writable: false, at: 'hole' }] },
  { name: 'read into a GPA hole', type: VIRTIO_BLK_T_IN, sector: 8n, data: [{ len: 512, writable: true, at: 'hole' }] },
  { name: 'unknown request type 0xffffffff', type: 0xffff_ffff, sector: 0n, data: [{ len: 512, writable: false }] },
];

describe('hostile requests to the vhost-ts blk daemon', () => {
  for (const req of BAD) {
    it(`${req.name}: an error status or NEEDS_RESET, the file untouched, the daemon alive`, async () => {
      const g = await HostileGuest.open(socketPath, { deviceFeatures: (1n << 13n) | (1n << 14n) }); // DISCARD, WRITE_ZEROES
      try {
        const v = g.fe.vrings[0]!;
        const hdr = g.alloc(16);
        const hv = new DataView(new ArrayBuffer(16));
        hv.setUint32(0, req.type, true);
        hv.setBigUint64(8, req.sector, true);
        g.bytes(hdr, new Uint8Array(hv.buffer));
        const segs: Array<{ gpa: number; len: number; writable: boolean }> = [{ gpa: hdr, len: req.headerLen ?? 16, writable: false }];
        for (const d of req.data) {
          let gpa: number;
          if (d.at === 'hole') gpa = g.regions[0]!.end + 0x4_0000;
          else if (d.len > 0x10_0000) gpa = g.alloc(4096); // the length lies: the buffer is small
          else gpa = g.alloc(d.len);
          if (d.at === undefined && !d.writable) {
            if (req.segment !== undefined) {
              const sv = new DataView(new ArrayBuffer(16));
              sv.setBigUint64(0, req.segment[0], true);
              sv.setUint32(8, req.segment[1], true);
              sv.setUint32(12, req.segment[2], true);
              g.bytes(gpa, new Uint8Array(sv.buffer));
            } else {
              g.fill(gpa, d.len, 0xee);
            }
          }
          segs.push({ gpa, len: d.len, writable: d.writable });
        }
        const status = g.alloc(1);
        g.fill(status, 1, 0x7f);
        segs.push({ gpa: status, len: 1, writable: req.statusWritable !== false });
        // Readable descriptors first, then writable ones (the order virtio requires).
        const sorted = [...segs.filter((x) => !x.writable), ...segs.filter((x) => x.writable)];
        const out = sorted.filter((x) => !x.writable).length;
        expect(v.ring.add(sorted.map((x) => x.gpa), sorted.map((x) => x.len), out, sorted.length - out, 1)).toBeGreaterThanOrEqual(0);
        v.ring.publish();
        g.kick(0);
        const used = { id: 0, len: 0, token: undefined as number | undefined };
        let completed = false;
        let needsReset = false;
        const end = Date.now() + 5000;
        while (!completed && !needsReset && Date.now() < end) {
          if (v.ring.getUsed(used)) completed = true;
          else if (((await g.status()) & DeviceStatus.NEEDS_RESET) !== 0) needsReset = true;
          else await new Promise((r) => setTimeout(r, 10));
        }
        expect(completed || needsReset, 'neither completed nor NEEDS_RESET within 5 s').toBe(true);
        if (completed && req.statusWritable !== false) {
          const st = new Uint8Array(1);
          g.fe.memory.memory.read(status, st, 0, 1);
          expect(st[0], `status ${st[0]} for a request that must fail`).not.toBe(0);
        }
        expect(g.canaryDamage()).toEqual([]);
      } finally {
        await g.close();
      }
      expect(alive, `the daemon died: ${stderr}`).toBe(true);
      expect(statSync(file).size, 'the backing file changed size').toBe(CAPACITY);
      expect(readFileSync(file).equals(pattern), 'the backing file changed').toBe(true);
    });
  }

  it('afterwards a valid write and read-back on queue 1 work', async () => {
    const g = await HostileGuest.open(socketPath);
    try {
      const v = g.fe.vrings[1]!;
      const hdr = g.alloc(16);
      const data = g.alloc(512);
      const status = g.alloc(1);
      const hv = new DataView(new ArrayBuffer(16));
      hv.setUint32(0, VIRTIO_BLK_T_OUT, true);
      hv.setBigUint64(8, 100n, true);
      g.bytes(hdr, new Uint8Array(hv.buffer));
      g.fill(data, 512, 0x5a);
      v.ring.add([hdr, data, status], [16, 512, 1], 2, 1, 1);
      v.ring.publish();
      g.kick(1);
      const used = { id: 0, len: 0, token: undefined as number | undefined };
      const end = Date.now() + 5000;
      while (!v.ring.getUsed(used) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      const st = new Uint8Array(1);
      g.fe.memory.memory.read(status, st, 0, 1);
      expect(st[0]).toBe(0);
    } finally {
      await g.close();
    }
    const now = readFileSync(file);
    expect(now.subarray(100 * 512, 101 * 512).every((b) => b === 0x5a)).toBe(true);
    pattern.fill(0x5a, 100 * 512, 101 * 512);
    expect(now.equals(pattern)).toBe(true);
    expect(alive).toBe(true);
  });
});
