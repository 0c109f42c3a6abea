/**
 * Faults: front-ends SIGKILLed mid-traffic (100 times), a front-end closing the
 * socket mid-message, a memfd shrunk after SET_MEM_TABLE, a module that throws
 * and one that never returns, and SIGTERM of a back-end under traffic (the
 * `vhost-ts net` daemon and the reliability back-end). Throughout, a witness
 * device in the same back-end process keeps its traffic flowing, and the
 * back-end's fds, mappings and threads return to the baseline.
 */
import { fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { F_SEAL_SEAL, F_SEAL_SHRINK, native } from '@vhost-ts/native';
import { BackendRefusedError, FrontendDevice, FrontendMemory, NetTraffic, VhostUserClient } from '@vhost-ts/frontend';
import { FrontendRequest, encodeMemoryTable, encodeVringState } from '@vhost-ts/vhost/protocol';
import { assertBackToBaseline, snapshot, type ResourceSnapshot } from '../support/leaks.js';
import { ensureBuilt } from './lib/build.js';
import { BackendProcess, fixturePath } from './lib/backend-process.js';
import { HostileGuest } from './lib/hostile-guest.js';
import { Prng } from './lib/prng.js';
import { startWitness, type Witness } from './lib/witness.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const RX = 0;
const TX = 1;
const KILLS = Number(process.env.VHOST_TS_FAULT_KILLS ?? 100);

let be: BackendProcess;
let witness: Witness;
let baseline: ResourceSnapshot;

beforeAll(async () => {
  await ensureBuilt();
  be = await BackendProcess.start({
    drivers: [
      { name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32], ackTimeoutMs: 2000 },
      { name: 'fail', module: 'fail', queuesPerWorker: 2, maxQueues: 2, features: [32], ackTimeoutMs: 1000 },
      { name: 'spin', module: fixturePath('modules/spin.mjs'), queuesPerWorker: 2, maxQueues: 2, features: [32], ackTimeoutMs: 1000, callbackTimeoutMs: 8000 },
      { name: 'other', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] },
    ],
  });
  // Warm up every socket once (lazily created threads and heap in the baseline).
  for (const s of ['dev', 'fail', 'spin']) {
    const g = await HostileGuest.open(be.sockets[s]!);
    await g.close();
  }
  witness = await startWitness(be.sockets.other!);
  await witness.flows(50);
  baseline = await settled();
}, 200_000);

afterAll(async () => {
  await witness?.close().catch(() => undefined);
  await be?.stop();
});

/** The back-end once the GC has unmapped what was released. */
async function settled(): Promise<ResourceSnapshot> {
  for (let i = 0; i < 100; i++) {
    if ((await be.nativeCounts(true)).released === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return be.snapshot();
}

async function healthy(): Promise<void> {
  expect(be.alive, `the back-end died: ${JSON.stringify(be.exitInfo)}\n${be.stderr()}`).toBe(true);
  expect(await witness.flows(20, 5000), 'the witness device stopped moving traffic').toBe(true);
}

/** Adds one TX frame whose first byte is `first` (and an RX buffer) and kicks. */
function sendFrame(g: HostileGuest, first: number): void {
  const rx = g.alloc(2048);
  g.fe.vrings[RX]!.ring.add([rx], [2048], 0, 1, 0);
  const tx = g.alloc(64);
  g.fill(tx, 64, 0x11);
  g.fill(tx, 1, first);
  g.fe.vrings[TX]!.ring.add([tx], [64], 1, 0, 0);
  g.fe.vrings[RX]!.ring.publish();
  g.fe.vrings[TX]!.ring.publish();
  g.kick(RX);
  g.kick(TX);
}

describe('front-end deaths', () => {
  it(`${KILLS} front-end SIGKILLs (mid-traffic, some mid-negotiation) against one back-end: back to the baseline (fds, mappings, worker threads)`, async () => {
    const r = new Prng(0x4b111, 0);
    const t0 = performance.now();
    let midTraffic = 0;
    let early = 0;
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < KILLS) {
        const i = next++;
        if (i % 5 === 4) {
          // Killed at a random moment of its start (connect, negotiation, first frames).
          const child = fork(fixturePath('frontend.mjs'), [JSON.stringify({ socketPath: be.sockets.dev!, rate: 5000 })], { stdio: 'ignore' });
          await new Promise((res) => setTimeout(res, r.range(30, 400)));
          const exited = new Promise((res) => child.once('exit', res));
          child.kill('SIGKILL');
          await exited;
          early++;
        } else {
          const fe = await startWitness(be.sockets.dev!, { rate: 5000 });
          const flowed = await fe.flows(r.range(1, 200), 5000);
          expect(flowed, `front-end ${i} never got traffic through`).toBe(true);
          await fe.kill();
          midTraffic++;
        }
        expect(be.alive, `back-end died after kill ${i}: ${be.stderr()}`).toBe(true);
      }
    };
    await Promise.all([lane(), lane()]);
    const seconds = (performance.now() - t0) / 1000;
    console.log(`front-end kills: ${midTraffic} mid-traffic + ${early} during start-up in ${seconds.toFixed(1)} s`);
    expect(midTraffic + early).toBe(KILLS);
    await healthy();
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 20_000, heapSlack: 128 });
    // Only the witness's device is left in the data plane.
    expect(await be.workerDevices()).toBe(1);
  }, 150_000);

  it('front-end closing the socket mid-message (partial header; partial payload with fds attached; a partial message left hanging): connections closed, fds released, others served', async () => {
    const logs0 = (await be.logs()).tail.length;
    const efd = native.eventfdCreate(0);
    const mem = native.memfdCreate('mid-message');
    native.ftruncate(mem, 1 << 20);
    const header = (request: number, size: number): Uint8Array => {
      const b = new Uint8Array(12 + size);
      const dv = new DataView(b.buffer);
      dv.setUint32(0, request, true);
      dv.setUint32(4, 1, true);
      dv.setUint32(8, size, true);
      return b;
    };
    try {
      // 1: 5 bytes of a header, then close.
      let fd = native.unixConnect(be.sockets.dev!);
      native.sendmsg(fd, header(1, 0), 0, 5);
      native.close(fd);
      // 2: a SET_MEM_TABLE header and half its payload with 2 fds attached, then close.
      fd = native.unixConnect(be.sockets.dev!);
      const table = encodeMemoryTable([
        { guestPhysAddr: 0n, memorySize: 0x8_0000n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n },
        { guestPhysAddr: 0x10_0000n, memorySize: 0x8_0000n, userspaceAddr: 0x7f00_1000_0000n, mmapOffset: 0x8_0000n },
      ]);
      const msg = header(FrontendRequest.SET_MEM_TABLE, table.byteLength);
      msg.set(table, 12);
      native.sendmsg(fd, msg, 0, 12 + 20, [mem, mem]);
      native.close(fd);
      // 3: a vring message cut after the header with an eventfd, left hanging while others are served.
      fd = native.unixConnect(be.sockets.dev!);
      const st = header(FrontendRequest.SET_VRING_KICK, 8);
      st.set(encodeVringState({ index: 0, num: 0 }), 12);
      native.sendmsg(fd, st, 0, 14, [efd]);
      const g = await HostileGuest.open(be.sockets.dev!);
      sendFrame(g, 0x11);
      const end = Date.now() + 5000;
      while (g.usedIdx(TX) < 1 && Date.now() < end) await new Promise((res) => setTimeout(res, 10));
      expect(g.usedIdx(TX)).toBe(1);
      await g.close();
      await healthy();
      native.close(fd);
    } finally {
      native.close(efd);
      native.close(mem);
    }
    const tail = (await be.logs()).tail.slice(Math.max(0, logs0 - 300));
    expect(tail.some((l) => /truncated message/.test(l)), tail.join('\n')).toBe(true);
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 10_000 });
  });
});

describe('fd exhaustion', () => {
  /**
   * Known defect (reported): UnixListener.onReadable (packages/vhost/src/transport/listener.ts)
   * answers an accept4 failure (EMFILE at the fd limit) with a warning and a return, but the
   * listening socket stays readable (the connection waits in the backlog), so the
   * level-triggered poller calls it again at once: the main thread spins on accept and
   * floods the log (tens of thousands of lines per second) for as long as a front-end holds
   * the fds — a denial of service by merely opening connections.
   */
  it('a back-end at its fd limit neither spins on accept nor floods its log, and serves again once fds are free', async () => {
    const limit = 64;
    const own = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }], fdLimit: limit });
    const held: number[] = [];
    try {
      // Connect until the back-end holds `limit` fds, then a few more that wait in the backlog.
      const end = Date.now() + 10_000;
      while (snapshot({ pid: own.pid }).fds.size < limit && Date.now() < end) {
        held.push(native.unixConnect(own.sockets.dev!));
        await new Promise((r) => setTimeout(r, 5));
      }
      for (let i = 0; i < 4; i++) held.push(native.unixConnect(own.sockets.dev!));
      const warn0 = (await own.logs()).counts.warn;
      await new Promise((r) => setTimeout(r, 2000));
      const warns = (await own.logs()).counts.warn - warn0;
      for (const fd of held.splice(0)) native.close(fd);
      const g = await HostileGuest.open(own.sockets.dev!);
      sendFrame(g, 0x11);
      const until = Date.now() + 5000;
      while (g.usedIdx(TX) < 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      expect(g.usedIdx(TX), 'served again once fds were free').toBe(1);
      await g.close();
      expect(own.alive).toBe(true);
      expect(warns, `${warns} warnings in 2 s at the fd limit`).toBeLessThan(100);
    } finally {
      for (const fd of held) native.close(fd);
      await own.stop();
    }
  });
});

describe('a front-end that never reads its replies', () => {
  /**
   * Known defect (reported): MessageChannel (packages/vhost/src/transport/channel.ts) keeps
   * reading and handling requests while its replies cannot be written (the peer does not
   * read): every reply is queued in `writes`, without bound. A front-end that sends
   * GET_FEATURES in a loop and never reads grows the back-end by ~0.5 KiB per request
   * (~20 MB/s here) until it is killed for lack of memory, with every other device in it.
   */
  it('250,000 GET_FEATURES never read: the back-end stops reading (back-pressure) and its memory stays bounded', async () => {
    const own = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${own.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
    const fd = native.unixConnect(own.sockets.dev!);
    try {
      await own.nativeCounts(true);
      const before = rss();
      const batch = new Uint8Array(12 * 1000);
      const dv = new DataView(batch.buffer);
      for (let i = 0; i < 1000; i++) {
        dv.setUint32(i * 12, FrontendRequest.GET_FEATURES, true);
        dv.setUint32(i * 12 + 4, 1, true);
      }
      let sent = 0;
      let offset = 0;
      const end = Date.now() + 25_000;
      let lastProgress = Date.now();
      // Until 250,000 are sent, or the back-end stopped reading (no progress for 2 s: back-pressure).
      while (sent < 250_000 && Date.now() < end && Date.now() - lastProgress < 2000) {
        const n = native.sendmsg(fd, batch, offset, batch.byteLength - offset);
        if (n < 0) {
          await new Promise((r) => setTimeout(r, 2));
          continue;
        }
        lastProgress = Date.now();
        offset = (offset + n) % batch.byteLength;
        sent += n / 12;
      }
      await new Promise((r) => setTimeout(r, 1000));
      const grown = rss() - before;
      console.log(`never-reading front-end: ${Math.floor(sent)} requests sent, back-end RSS +${(grown / 2 ** 20).toFixed(0)} MiB`);
      expect(own.alive).toBe(true);
      expect(grown, `the back-end grew by ${(grown / 2 ** 20).toFixed(0)} MiB for ${Math.floor(sent)} unread replies`).toBeLessThan(64 * 2 ** 20);
    } finally {
      native.close(fd);
      await own.stop();
    }
  }, 60_000);
});

describe('guest memory shrunk behind the back-end', () => {
  it('a sealable memfd is sealed against shrinking by SET_MEM_TABLE: the shrink fails with EPERM, traffic keeps flowing (no SIGBUS)', async () => {
    const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
    const fe = await FrontendDevice.start(client, { vrings: 2, queueSize: 128, memory: { kind: 'multi', size: 4 << 20, regions: 2 } });
    try {
      for (const fd of fe.memory.fds) {
        expect(native.getSeals(fd) & F_SEAL_SHRINK).toBe(F_SEAL_SHRINK);
        expect(() => native.ftruncate(fd, 4096)).toThrow(/EPERM/);
      }
      const r = await new NetTraffic(fe, { mode: 'loop', frameSize: 64, spinUs: 0 }).run(1.5, 1000);
      expect(r.received).toBeGreaterThan(0);
      expect(r).toMatchObject({ bad: 0, lost: 0 });
    } finally {
      await fe.close();
    }
    await healthy();
  });

  it('a memfd already shorter than its region is refused up front by the size check, nothing mapped', async () => {
    const before = await be.nativeCounts();
    const mem = FrontendMemory.create({ kind: 'multi', size: 2 << 20, regions: 2 });
    const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
    try {
      await client.setOwner();
      await client.setProtocolFeatures((await client.getProtocolFeatures()) & 0x1_0009n); // MQ, REPLY_ACK, STATUS
      await client.setFeatures(await client.getFeatures());
      native.ftruncate(mem.fds[1]!, 4096);
      await expect(client.setMemTable(mem.memoryTable(), mem.memoryTableFds())).rejects.toBeInstanceOf(BackendRefusedError);
    } finally {
      client.close();
      mem.close();
    }
    await new Promise((res) => setTimeout(res, 100));
    expect((await be.nativeCounts()).live).toBe(before.live);
    await healthy();
  });

  /**
   * mapFdArea (packages/vhost/src/memory/mapping.ts) maps a memfd it could not seal (the
   * front-end set F_SEAL_SEAL without F_SEAL_SHRINK, or a tmpfs file) "relying on the size
   * check" by default, because DPDK's --no-huge memory is such a memfd; a truncation
   * afterwards makes the next access raise SIGBUS (the residual risk documented in
   * packages/vhost/README.md). With requireSealedMemory the back-end refuses such memory.
   */
  it('a memfd the back-end cannot seal (F_SEAL_SEAL set by the front-end), shrunk after SET_MEM_TABLE: with requireSealedMemory the back-end refuses it and survives (no SIGBUS)', async () => {
    // Its own back-end: if the memory were mapped and shrunk, the process would die.
    const own = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32], requireSealedMemory: true }, { name: 'other', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    const w = await startWitness(own.sockets.other!);
    const client = await VhostUserClient.connect(own.sockets.dev!, { timeoutMs: 5000 });
    const fe = await FrontendDevice.start(client, { vrings: 2, queueSize: 128, memory: { kind: 'multi', size: 4 << 20, regions: 1 } });
    // A second memory with the same layout, sealed by the front-end against further seals.
    const evil = FrontendMemory.create({ kind: 'multi', size: 4 << 20, regions: 1 });
    try {
      for (const fd of evil.fds) native.addSeals(fd, F_SEAL_SEAL);
      let refused = false;
      try {
        await client.setMemTable(evil.memoryTable(), evil.memoryTableFds());
      } catch (err) {
        if (!(err instanceof BackendRefusedError)) throw err;
        refused = true;
      }
      let shrunk = false;
      if (!refused) {
        try {
          native.ftruncate(evil.fds[0]!, 0); // the rings' pages are now past EOF
          shrunk = true;
        } catch {
          shrunk = false;
        }
        fe.kick(RX);
        fe.kick(TX);
        await new Promise((res) => setTimeout(res, 500));
      }
      expect(own.alive, `the back-end died (${JSON.stringify(own.exitInfo)}) after the front-end shrank an unsealable region (refused ${refused}, shrunk ${shrunk})`).toBe(true);
      expect(refused, 'requireSealedMemory: an unsealable memfd must be refused').toBe(true);
      expect(await w.flows(20, 5000)).toBe(true);
    } finally {
      evil.close();
      await fe.close({ graceful: false });
      await w.kill();
      await own.stop();
    }
  });
});

describe('worker crashes', () => {
  it('a module that throws: NEEDS_RESET and err eventfd, the stop still answered; the process and the other device survive; a new connection gets a working device', async () => {
    const g = await HostileGuest.open(be.sockets.fail!);
    try {
      sendFrame(g, 255); // the fail module's marker
      expect(await g.waitNeedsReset(TX, 5000)).toMatchObject({ err: true, needsReset: true });
      expect((await g.close()).stopped).toBe(true);
    } finally {
      await g.close().catch(() => undefined);
    }
    await healthy();
    const g2 = await HostileGuest.open(be.sockets.fail!);
    try {
      sendFrame(g2, 0x11);
      const end = Date.now() + 5000;
      while (g2.usedIdx(TX) < 1 && Date.now() < end) await new Promise((res) => setTimeout(res, 10));
      expect(g2.usedIdx(TX)).toBe(1);
      expect((await g2.status()) & 0x40).toBe(0);
    } finally {
      await g2.close();
    }
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 10_000 });
  });

  it('a module that never returns: the control plane keeps answering, the other device keeps running, stopping the device (or closing the connection) terminates the hung worker in bounded time', async () => {
    for (const how of ['stop', 'disconnect'] as const) {
      const g = await HostileGuest.open(be.sockets.spin!);
      let closed = false;
      try {
        sendFrame(g, 254); // the spin module's marker: the worker hangs in the module
        await new Promise((res) => setTimeout(res, 300));
        const t = performance.now();
        await g.status(); // the main thread is not blocked by the hung worker
        expect(performance.now() - t).toBeLessThan(1000);
        await healthy();
        const t0 = performance.now();
        if (how === 'stop') {
          await g.close();
        } else {
          g.fe.client.close();
          await g.close();
        }
        closed = true;
        // The hung worker is terminated: the device's workers are gone within the ack timeouts.
        const end = Date.now() + 10_000;
        while ((await be.workerDevices()) > 1 && Date.now() < end) await new Promise((res) => setTimeout(res, 50));
        expect(await be.workerDevices()).toBe(1);
        console.log(`hung module (${how}): device torn down in ${(performance.now() - t0).toFixed(0)} ms`);
      } finally {
        if (!closed) await g.close().catch(() => undefined);
      }
    }
    await healthy();
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 10_000 });
  });
});

describe('back-end SIGTERM under traffic', () => {
  it('the vhost-ts net daemon exits 0 within 2 s of SIGTERM under traffic and removes its socket', async () => {
    const main = path.join(ROOT, 'packages/cli/dist/main.js');
    expect(existsSync(main), 'packages/cli is not built').toBe(true);
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-sigterm-'));
    const sock = path.join(dir, 'net.sock');
    const daemon = spawn(process.execPath, [main, 'net', `--socket-path=${sock}`, '--module=echo', '--stats-interval=0', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    daemon.stderr.setEncoding('utf8');
    daemon.stderr.on('data', (d: string) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => daemon.once('exit', (code, signal) => res({ code, signal })));
    let fe: Witness | null = null;
    try {
      const end = Date.now() + 15_000;
      while (!existsSync(sock) && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
      fe = await startWitness(sock, { rate: 20_000 });
      expect(await fe.flows(500, 5000)).toBe(true);
      const t0 = performance.now();
      daemon.kill('SIGTERM');
      const timer = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
      const e = await exited;
      clearTimeout(timer);
      const ms = performance.now() - t0;
      console.log(`vhost-ts net: exit ${JSON.stringify(e)} ${ms.toFixed(0)} ms after SIGTERM`);
      expect(e, stderr).toEqual({ code: 0, signal: null });
      expect(ms).toBeLessThan(2000);
      expect(existsSync(sock)).toBe(false);
    } finally {
      await fe?.kill();
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the reliability back-end stops every device before exiting on SIGTERM under traffic: no mapping or worker left, exit 0 within 2 s', async () => {
    const own = await BackendProcess.start({ drivers: [{ name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] }] });
    const fes = [await startWitness(own.sockets.dev!, { rate: 20_000 }), await startWitness(own.sockets.dev!, { rate: 20_000 })];
    try {
      for (const f of fes) expect(await f.flows(200, 5000)).toBe(true);
      const t0 = performance.now();
      own.child.kill('SIGTERM');
      const e = await own.exited;
      const ms = performance.now() - t0;
      const report = own.stdout().map((l) => JSON.parse(l) as { exit?: { stopMs: number; live: number; workers: number } }).find((x) => x.exit !== undefined)?.exit;
      console.log(`reliability back-end: exit ${JSON.stringify(e)} ${ms.toFixed(0)} ms after SIGTERM, ${JSON.stringify(report)}`);
      expect(e).toEqual({ code: 0, signal: null });
      expect(ms).toBeLessThan(2000);
      expect(report).toMatchObject({ live: 0, workers: 0 });
    } finally {
      for (const f of fes) await f.kill();
      await own.stop();
    }
  });
});

describe('afterwards', () => {
  it('the shared back-end logged no internal error (every fault was handled as a refusal, a reset or a close)', async () => {
    const logs = await be.logs();
    expect(logs.internal, `internal errors in the back-end log:\n${logs.internalLines.join('\n\n')}`).toBe(0);
    await healthy();
  });
});
