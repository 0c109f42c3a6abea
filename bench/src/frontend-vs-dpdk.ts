/**
 * Our front-end (@vhost-ts/frontend) next to DPDK's own virtio-user front-end,
 * both against the same DPDK vhost PMD back-end, in the same run:
 *
 *   node bench/dist/frontend-vs-dpdk.js [--pairs N] [--measure-ms MS] [--sizes 64,1500]
 *        [--scenarios tx,loop] [--packed] [--in-flight N] [--queue-size N]
 *
 * (build first: `npx tsc -b bench`). Scenarios, for every frame size:
 * - tx: the front-end transmits flat out; the back-end runs `rxonly`.
 *   Ours: NetTraffic mode tx. DPDK: testpmd `net_virtio_user` in `txonly`.
 * - loop: the back-end runs `io` (forwards what it receives back to the
 *   front-end). Ours: NetTraffic mode loop with content checks and a window of
 *   `--in-flight` frames. DPDK: testpmd `net_virtio_user` in `io`, seeded with
 *   `start tx_first` bursts of 32 (in-flight / 32 bursts, same frame count).
 * The figure for both is the back-end's RX packets/s over `--measure-ms`
 * (`show port stats` deltas; in loop the back-end forwards as much as it
 * receives), after a 500 ms warm-up. Runs alternate A (ours), B (DPDK) for
 * `--pairs` pairs; medians are reported (this machine is noisy: compare only
 * within one run). CPU placement is the same for both: the back-end forwards
 * on CPU 1, the front-end's data path runs on CPU 0 (our main thread is pinned,
 * DPDK's forwarding lcore is 1@0).
 */
import { loadavg } from 'node:os';
import { native } from '@vhost-ts/native';
import { acquirePeerLock, isTestpmdAvailable, makeTempDir, removeDir, socketPath, Testpmd } from '@vhost-ts/peers';
import { NetTraffic, openNetDevice, type TrafficResult } from '@vhost-ts/frontend';

interface Options {
  pairs: number;
  measureMs: number;
  sizes: number[];
  scenarios: ('tx' | 'loop')[];
  packed: boolean;
  inFlight: number;
  queueSize: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { pairs: 3, measureMs: 2000, sizes: [64, 1500], scenarios: ['tx', 'loop'], packed: false, inFlight: 128, queueSize: 256 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--pairs') o.pairs = Number(v());
    else if (a === '--measure-ms') o.measureMs = Number(v());
    else if (a === '--sizes') o.sizes = v().split(',').map(Number);
    else if (a === '--scenarios') o.scenarios = v().split(',') as Options['scenarios'];
    else if (a === '--packed') o.packed = true;
    else if (a === '--in-flight') o.inFlight = Number(v());
    else if (a === '--queue-size') o.queueSize = Number(v());
    else throw new Error(`unknown option ${a}`);
  }
  if (o.inFlight % 32 !== 0 || o.inFlight < 32) throw new Error('--in-flight must be a multiple of 32 (DPDK seeds bursts of 32)');
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mpps = (x: number): string => (x / 1e6).toFixed(3);

/**
 * A sample whose set-up failed (e.g. testpmd's prompt garbled by a concurrent log line, which
 * the harness then waits for in vain) is taken again, up to 3 attempts.
 */
async function retry<T>(f: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (e) {
      if (attempt >= 3) throw e;
      console.error(`sample failed (attempt ${attempt}), retrying: ${(e as Error).message.split('\n')[0]}`);
      await sleep(1000);
    }
  }
}

/** One measurement with our front-end: back-end RX pps over the window, plus our own result. */
async function runOurs(be: Testpmd, o: Options, scenario: 'tx' | 'loop', size: number): Promise<{ pps: number; ours: TrafficResult }> {
  const dev = await openNetDevice({ socketPath: be.socketPath, packed: o.packed, queueSize: o.queueSize });
  try {
    const t = new NetTraffic(dev, { mode: scenario, frameSize: size, ...(scenario === 'loop' ? { window: o.inFlight } : {}) });
    const run = t.run(3600, 1000);
    await sleep(500);
    const rate = await be.measureRate(o.measureMs);
    t.stop();
    const ours = await run;
    if (ours.bad !== 0 || ours.duplicated !== 0) throw new Error(`our front-end saw bad=${ours.bad} duplicated=${ours.duplicated}`);
    return { pps: rate.rxPps, ours };
  } finally {
    await dev.close();
  }
}

/** One measurement with DPDK's virtio-user (testpmd front-end). */
async function runDpdk(be: Testpmd, o: Options, scenario: 'tx' | 'loop', size: number): Promise<number> {
  const fe = await Testpmd.start({
    role: 'frontend',
    socketPath: be.socketPath,
    forwardMode: scenario === 'tx' ? 'txonly' : 'io',
    txpkts: size,
    autoStart: scenario === 'tx',
    packedVq: o.packed,
    queueSize: o.queueSize,
    lcores: '0@1,1@0', // forwarding on CPU 0, like our front-end
    name: 'testpmd-virtio-user',
  });
  try {
    await be.waitForLinkUp(0, 10_000);
    if (scenario === 'loop') await fe.start(o.inFlight / 32);
    await sleep(500);
    const rate = await be.measureRate(o.measureMs);
    return rate.rxPps;
  } finally {
    await fe.close();
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const avail = isTestpmdAvailable();
  if (!avail.ok) throw new Error(avail.reason);
  const release = await acquirePeerLock();
  const dir = await makeTempDir('fe-bench');
  const affinity = native.getAffinity();
  if (affinity.includes(0) && affinity.length > 1) native.setAffinity([0]);
  const rows: { scenario: string; size: number; ours: number[]; dpdk: number[] }[] = [];
  const loadBefore = loadavg()[0]!;
  try {
    for (const scenario of o.scenarios) {
      const be = await Testpmd.start({
        role: 'backend',
        socketPath: socketPath(dir, `${scenario}.sock`),
        forwardMode: scenario === 'tx' ? 'rxonly' : 'io',
        // Explicit: this process is pinned to CPU 0, and the harness's default reads the CPU
        // count from our affinity mask (it would then put both lcores on CPU 0).
        lcores: '0@0,1@1',
        name: 'testpmd-vhost',
      });
      try {
        for (const size of o.sizes) {
          const row = { scenario, size, ours: [] as number[], dpdk: [] as number[] };
          for (let p = 0; p < o.pairs; p++) {
            const a = await retry(() => runOurs(be, o, scenario, size));
            row.ours.push(a.pps);
            const b = await retry(() => runDpdk(be, o, scenario, size));
            row.dpdk.push(b);
            console.log(JSON.stringify({ type: 'pair', scenario, size, pair: p, oursPps: Math.round(a.pps), dpdkPps: Math.round(b), oursSelf: { sent: a.ours.sent, received: a.ours.received, lost: a.ours.lost } }));
          }
          rows.push(row);
        }
      } finally {
        await be.close();
      }
    }
  } finally {
    native.setAffinity(affinity);
    await removeDir(dir);
    await release();
  }
  // Busy-polling peers on a 2-core machine collapse when other processes compete: say how loaded it was.
  console.log(`\nload average (1 min): ${loadBefore.toFixed(2)} before, ${loadavg()[0]!.toFixed(2)} after`);
  console.log(`front-end vs DPDK virtio-user, DPDK vhost PMD back-end, ${o.packed ? 'packed' : 'split'} rings, queue size ${o.queueSize}, 1 queue pair, medians of ${o.pairs} A/B pairs (Mpps at the back-end)`);
  console.log('scenario  size   ours    dpdk   ours/dpdk   samples ours | dpdk');
  for (const r of rows) {
    const a = median(r.ours);
    const b = median(r.dpdk);
    console.log(
      `${r.scenario.padEnd(8)} ${String(r.size).padStart(5)}  ${mpps(a).padStart(6)}  ${mpps(b).padStart(6)}   ${(a / b).toFixed(2).padStart(6)}     ${r.ours.map(mpps).join(' ')} | ${r.dpdk.map(mpps).join(' ')}`,
    );
    console.log(JSON.stringify({ type: 'median', scenario: r.scenario, size: r.size, oursPps: Math.round(a), dpdkPps: Math.round(b), ratio: a / b, ours: r.ours.map(Math.round), dpdk: r.dpdk.map(Math.round) }));
  }
}

await main();
