/**
 * Control-plane fuzzer in CI: a fixed seed and a bounded count of messages
 * (see lib/control-fuzz.ts for what is generated and the oracle) against a
 * vhost-ts back-end in a child process (VhostUserDriver + data plane +
 * loopback module), while our front-end runs net loop traffic on the same
 * socket. Long runs: test/reliability/fuzz-cli.ts.
 *
 * Env: VHOST_TS_FUZZ_SEED (default 0x5eed), VHOST_TS_FUZZ_MESSAGES (default 20000).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native, POLL_READABLE } from '@vhost-ts/native';
import { VhostConnection } from '@vhost-ts/frontend';
import { FLAG_NEED_REPLY, FrontendRequest, encodeU64, frontendRequestRule } from '@vhost-ts/vhost/protocol';
import { assertBackToBaseline, type ResourceSnapshot } from '../support/leaks.js';
import { ensureBuilt } from './lib/build.js';
import { BackendProcess } from './lib/backend-process.js';
import { FUZZ_DRIVER_FEATURES, FUZZ_MAX_QUEUES, OFFERED_FEATURES, OFFERED_PROTOCOL, fuzzControlPlane, type Finding } from './lib/control-fuzz.js';
import { startWitness } from './lib/witness.js';

const SEED = Number(process.env.VHOST_TS_FUZZ_SEED ?? 0x5eed);
const MESSAGES = Number(process.env.VHOST_TS_FUZZ_MESSAGES ?? 20_000);

let be: BackendProcess;
let baseline: ResourceSnapshot;

beforeAll(async () => {
  await ensureBuilt();
  be = await BackendProcess.start({
    drivers: [
      { name: 'fuzz', module: 'loopback', queuesPerWorker: 2, maxQueues: FUZZ_MAX_QUEUES, features: FUZZ_DRIVER_FEATURES, config: true, inflight: true, ackTimeoutMs: 2000, callbackTimeoutMs: 5000 },
    ],
  });
  // Warm-up: one device life cycle, so lazily created threads and heap are in the baseline.
  const w = await startWitness(be.sockets.fuzz!);
  await w.flows(100);
  await w.close();
  baseline = await settle(be);
}, 200_000);

afterAll(async () => {
  await be?.stop();
});

/** A baseline of the child once its released mappings are unmapped. */
async function settle(b: BackendProcess): Promise<ResourceSnapshot> {
  for (let i = 0; i < 50; i++) {
    const n = await b.nativeCounts(true);
    if (n.released === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return b.snapshot();
}

function report(findings: Finding[]): string {
  return findings
    .slice(0, 5)
    .map((f) => `[${f.kind}] seed=${f.seed} connection=${f.connection}: ${f.detail}\nreplay: node test/reliability/dist/reliability/fuzz-cli.js --seed ${f.seed} --only ${f.connection}\n${f.plan}`)
    .join('\n\n');
}

describe('control-plane fuzzer', () => {
  it(`${MESSAGES} fuzzed messages (seed ${SEED}): back-end alive, garbage refused or closed, no hang, no leak, a witness connection keeps its traffic flowing`, async () => {
    console.log(`control-plane fuzz: seed ${SEED}, ${MESSAGES} messages`);
    const t0 = performance.now();
    const witness = await startWitness(be.sockets.fuzz!);
    let windows = 0;
    const stalls: number[] = [];
    let last = witness.received();
    const monitor = setInterval(() => {
      const now = witness.received();
      windows++;
      if (now === last) stalls.push(windows);
      last = now;
    }, 2000);
    let stats;
    try {
      stats = await fuzzControlPlane({
        socketPath: be.sockets.fuzz!,
        seed: SEED,
        messages: MESSAGES,
        lanes: 3,
        replyTimeoutMs: 8000,
        shouldStop: () => !be.alive,
      });
    } finally {
      clearInterval(monitor);
    }
    const flowing = await witness.flows(100, 5000);
    const traffic = await witness.close();
    const seconds = (performance.now() - t0) / 1000;
    const logs = await be.logs().catch(() => null);
    console.log(
      `control-plane fuzz: ${stats.messages} messages, ${stats.connections} connections in ${seconds.toFixed(1)} s; closed by the back-end ${stats.closedByBackend}, failure replies ${stats.failureReplies}; ` +
        `terminals ${JSON.stringify(stats.terminals)}; witness ${traffic.received}/${traffic.sent} frames, stalls ${stalls.length}/${windows}; back-end log ${JSON.stringify(logs?.counts)} ready ${logs?.ready}`,
    );
    expect(be.alive, `the back-end died: ${JSON.stringify(be.exitInfo)}\n${be.stderr()}`).toBe(true);
    expect(stats.findings, report(stats.findings)).toEqual([]);
    expect(stats.messages).toBeGreaterThanOrEqual(MESSAGES);
    expect(logs!.internal, `internal errors in the back-end log:\n${logs!.internalLines.join('\n\n')}`).toBe(0);
    // Rings really got started by fuzzed sequences.
    expect(logs!.ready).toBeGreaterThan(stats.connections / 10);
    // The witness: traffic never stalled for a whole 2 s window and nothing came back corrupted.
    expect(stalls, `witness traffic stalled in windows ${stalls.join(',')}`).toEqual([]);
    expect(flowing).toBe(true);
    expect(traffic).toMatchObject({ bad: 0, duplicated: 0, foreign: 0 });
    expect(traffic.received).toBeGreaterThan(1000);
    // Exact counters (fds, memfd and native mappings, threads, watches) must be back; the total of
    // anonymous mappings (V8 heap, malloc arenas of the hundreds of exited worker threads) gets more
    // slack. Measured right after this run: +145 mappings over the baseline, 115 of them 256 KiB
    // pages of the main isolate's heap (same with session 1's code); it shrinks only when V8 gets
    // to it, which on a loaded CI machine took longer than the 15 s below (a fresh-clone CI run
    // failed at slack 128). Transient, not per connection: on a quiet machine the long-run fuzzer
    // (fuzz-cli.js --messages 100000 --seed 24301: 4272 connections) passes its check after every
    // 20,000 messages with the default slack of 64, where a leak of the size seen here per
    // connection (~34 KiB) would be +580 pages by the end.
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 15_000, heapSlack: 256 });
    expect(await be.workerDevices()).toBe(0);
  }, 240_000);
});

/**
 * A fake back-end for checking the oracle: `accept-all` answers every message that wants an
 * answer with success and never closes; `mute` reads and never answers.
 */
async function withFakeBackend<T>(mode: 'accept-all' | 'mute', fn: (socketPath: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-fake-'));
  const socketPath = path.join(dir, 'fake.sock');
  const listenFd = native.unixListen(socketPath);
  const conns = new Set<VhostConnection>();
  const serve = async (conn: VhostConnection): Promise<void> => {
    for (;;) {
      let m;
      try {
        m = await conn.receive(Infinity);
      } catch {
        return;
      }
      for (const fd of m.fds) native.close(fd);
      if (mode === 'mute') continue;
      const rule = frontendRequestRule(m.request);
      if ((m.flags & FLAG_NEED_REPLY) === 0 && (rule === undefined || rule.reply === 'none')) continue;
      const value = m.request === FrontendRequest.GET_FEATURES ? OFFERED_FEATURES : m.request === FrontendRequest.GET_PROTOCOL_FEATURES ? OFFERED_PROTOCOL : 0n;
      const payload = m.request === FrontendRequest.GET_VRING_BASE ? m.payload.slice(0, 8) : encodeU64(value);
      const out = new Uint8Array(12 + payload.byteLength);
      const dv = new DataView(out.buffer);
      dv.setUint32(0, m.request, true);
      dv.setUint32(4, 0x5, true);
      dv.setUint32(8, payload.byteLength, true);
      out.set(payload, 12);
      await conn.send(out).catch(() => undefined);
    }
  };
  const poller = new native.Poller(listenFd, () => {
    for (;;) {
      const fd = native.unixAccept(listenFd);
      if (fd < 0) return;
      const conn = new VhostConnection(fd);
      conns.add(conn);
      void serve(conn).finally(() => {
        conn.close();
        conns.delete(conn);
      });
    }
  });
  poller.start(POLL_READABLE);
  try {
    return await fn(socketPath);
  } finally {
    poller.close();
    native.close(listenFd);
    for (const c of conns) c.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the fuzzer oracle can fail', () => {
  it('flags a back-end that accepts invalid messages (accepted-invalid findings)', async () => {
    const stats = await withFakeBackend('accept-all', (socketPath) => fuzzControlPlane({ socketPath, seed: SEED, messages: 3000, lanes: 2, replyTimeoutMs: 1000 }));
    const kinds = new Set(stats.findings.map((f) => f.kind));
    expect(kinds.has('accepted-invalid'), JSON.stringify([...kinds])).toBe(true);
  });

  it('flags a back-end that never answers (hang findings)', async () => {
    const stats = await withFakeBackend('mute', (socketPath) => fuzzControlPlane({ socketPath, seed: SEED, messages: 200, lanes: 2, replyTimeoutMs: 100 }));
    expect(stats.findings.some((f) => f.kind === 'hang')).toBe(true);
  });
});
