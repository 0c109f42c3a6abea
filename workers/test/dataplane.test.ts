/**
 * End to end over a real vhost-user socket: the control plane
 * (@vhost-ts/vhost's VhostUserDriver) with the data plane attached
 * (packages/vhost/src/dataplane), driven by our front-end
 * (@vhost-ts/frontend) — traffic, repeated SET_MEM_TABLE, GET_VRING_BASE and
 * disconnect, with nothing lost or duplicated.
 * Builds packages/frontend (and with it vhost) first: the default
 * `VHOST_TS_BUILD=workers` run builds only this package.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modules } from '@vhost-ts/workers';
import { until } from './guest.js';

const root = path.resolve(import.meta.dirname, '../..');
type VhostMod = typeof import('@vhost-ts/vhost');
type DataplaneMod = typeof import('@vhost-ts/vhost/dataplane/index');
type FrontendMod = typeof import('@vhost-ts/frontend');
let vhost: VhostMod;
let dataplane: DataplaneMod;
let frontend: FrontendMod;
let dir: string;

beforeAll(async () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-b', 'packages/frontend'], { cwd: root, stdio: 'inherit' });
  } catch {
    // Type errors in a package under concurrent edit: tsc -b still emitted its JavaScript; the imports below tell.
  }
  vhost = await import('@vhost-ts/vhost');
  dataplane = await import('@vhost-ts/vhost/dataplane/index');
  frontend = await import('@vhost-ts/frontend');
  dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-dp-'));
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('data plane behind the control plane', () => {
  it('serves a device over a socket: traffic, repeated SET_MEM_TABLE, GET_VRING_BASE and disconnect without a lost or duplicated descriptor', async () => {
    const socketPath = path.join(dir, 'dp.sock');
    const VIRTIO_F_VERSION_1 = 32n;
    const drv = new vhost.VhostUserDriver({
      path: socketPath,
      maxQueues: 2,
      features: vhost.DEFAULT_FEATURES | (1n << VIRTIO_F_VERSION_1),
      logger: vhost.silentLogger,
    });
    const errors: string[] = [];
    const dp = dataplane.attachDataPlane(drv, {
      module: modules.sink,
      queuesPerWorker: 2,
      spinUs: 0,
      logger: vhost.silentLogger,
      onError: (_d, e) => errors.push(e.message),
    });
    await drv.start();
    const client = await frontend.VhostUserClient.connect(socketPath, { timeoutMs: 5000 });
    const fe = await frontend.FrontendDevice.start(client, { vrings: 2, queueSize: 128, memory: { kind: 'multi', size: 8 << 20, regions: 2 } });
    try {
      expect(await until(() => drv.devices.length === 1 && dp.workers(drv.devices[0]!) !== undefined)).toBe(true);
      const dev = drv.devices[0]!;
      const workers = dp.workers(dev)!;
      expect(workers.workerCount).toBe(1);

      // Guest buffers: one 256-byte buffer per descriptor slot per ring.
      const bufs = fe.vrings.map((v) => fe.memory.allocator.alloc(v.size * 256, 64).gpa);
      const posted = [0, 0];
      const returned = [0, 0];
      const outstanding = [new Set<number>(), new Set<number>()];
      const used = { id: 0, len: 0, token: undefined as number | undefined };
      const addr = [0];
      const len = [64];
      let seq = 0;
      const pump = (): void => {
        for (const v of fe.vrings) {
          while (v.ring.getUsed(used)) {
            if (!outstanding[v.index]!.delete(used.token!)) throw new Error(`token ${used.token} came back twice`);
            returned[v.index]!++;
          }
          for (let k = 0; k < 16 && v.ring.numFree > 0; k++) {
            const t = seq++;
            addr[0] = bufs[v.index]! + (t % v.size) * 256;
            if (v.ring.add(addr, len, 1, 0, t) < 0) break;
            outstanding[v.index]!.add(t);
            posted[v.index]!++;
          }
          if (v.ring.needsKick()) fe.kick(v.index);
        }
      };
      let running = true;
      const gen = (async () => {
        while (running) {
          pump();
          await new Promise((r) => setImmediate(r));
        }
      })();

      for (let i = 0; i < 4; i++) {
        const before = returned.slice();
        expect(await until(() => returned.every((r, q) => r > before[q]! + 100), 10_000)).toBe(true);
        // A repeat SET_MEM_TABLE: the control plane maps the regions again, pauses, swaps, resumes.
        await client.setMemTable(fe.memory.memoryTable(), fe.memory.memoryTableFds());
      }
      const before = returned.slice();
      expect(await until(() => returned.every((r, q) => r > before[q]! + 100), 10_000)).toBe(true);
      running = false;
      await gen;

      // GET_VRING_BASE (after SET_VRING_ENABLE 0) while chains are still posted.
      for (const v of fe.vrings) {
        for (let k = 0; k < 8 && v.ring.numFree > 0; k++) {
          const t = seq++;
          addr[0] = bufs[v.index]! + (t % v.size) * 256;
          v.ring.add(addr, len, 1, 0, t);
          outstanding[v.index]!.add(t);
          posted[v.index]!++;
        }
        v.ring.publish();
        fe.kick(v.index);
      }
      const { bases } = await fe.stop();
      for (const v of fe.vrings) {
        while (v.ring.getUsed(used)) {
          if (!outstanding[v.index]!.delete(used.token!)) throw new Error(`token ${used.token} came back twice`);
          returned[v.index]!++;
        }
        // Every consumed chain was returned, and the base is exactly what was consumed.
        expect(bases[v.index]).toBe(returned[v.index]! & 0xffff);
        expect(posted[v.index]! - returned[v.index]!).toBe(outstanding[v.index]!.size);
        expect(returned[v.index]!).toBeGreaterThan(500);
      }
      expect(dp.workers(dev)).toBeUndefined();
      const st = workers.stats();
      expect(st.workers.every((w) => w.state === 'exited')).toBe(true);
      // 4 memory swaps (pause + apply + resume each), the ring stops of SET_VRING_ENABLE 0, exit.
      expect(st.workers[0]!.requests).toBeGreaterThanOrEqual(4 * 3 + 2);
      expect(errors).toEqual([]);
    } finally {
      await fe.close();
      await drv.stop();
    }
    expect(dp.manager.list()).toEqual([]);
  });
});
