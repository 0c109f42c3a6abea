/**
 * vhost-ts's net back-end next to DPDK's own vhost PMD back-end, driven by the
 * same DPDK virtio-user front-end (testpmd), in one session (issue 8):
 *
 *   npx tsc -b bench packages/cli && node bench/dist/perf-compare.js
 *     [--pairs N=5] [--measure-ms MS=3000] [--warmup-ms MS=1500] [--sizes 64,1500]
 *     [--queues 1,2] [--tx-first N=4] [--gc-seconds S=30 | --no-gc] [--no-latency]
 *     (--pairs 0: only the GC run and/or the wake-up latency)
 *     [--nice N] [--ours-arg ARG]... [--b-ours-arg ARG]... [--b-ours-script JS] [--cpus2 1,0] [--ours-node-arg FLAG]... [--ours-script JS] [--tag TEXT] [--debug]
 *
 * Throughput: for every (queue pairs, frame size) case, `--pairs` A/B pairs
 * run alternately: A = `node packages/cli/dist/main.js net --module=echo
 * --queues=Q --cpus=...` (ours), B = `dpdk-testpmd --vdev net_vhost0` in `io`
 * mode (DPDK). Each run starts its back-end afresh on a new socket, then the
 * front-end: testpmd `--vdev net_virtio_user0` in `io` mode, seeded with
 * `start tx_first N` (the standard loopback test: the same frames circulate
 * front-end -> back-end -> front-end). CPUs: the back-end forwards on CPU 1
 * (DPDK: lcores 0@0,1@1; ours: workers pinned with --cpus), the front-end
 * forwards on CPU 0 (lcores 0@1,1@0). After `--warmup-ms`, the figure is the
 * front-end's RX packets/s over `--measure-ms` (show port stats deltas; every
 * packet it receives crossed the back-end once), and the back-end process's
 * CPU time (utime+stime of every thread, /proc/<pid>/stat) over the same
 * window divided by those packets: CPU-ns/packet.
 * With 2 queue pairs the front-end's single forwarding core serves both
 * pairs; ours runs 2 workers pinned to CPUs 1 and 0 (`--cpus=1,0`), DPDK one
 * forwarding core for both (CPU 1): on 2 vCPUs, judge scaling by CPU-ns/packet.
 * `--b-ours-arg` turns B into ours with extra arguments (an ours-vs-ours A/B,
 * e.g. with `--ours-script` of an experiment); `--b-ours-script` does the same with
 * B running another build's CLI (before/after of a change). The columns still say DPDK.
 *
 * GC/RSS: one `--gc-seconds` run of ours (64 B, 1 pair) under `node --trace-gc`:
 * collections per isolate (main thread and each worker) inside the window, and
 * the daemon's VmRSS sampled every second.
 *
 * Wake-up latency: `node bench/dist/dataplane.js` (the data-plane bench: one
 * queue worker of the runtime asleep with notifications on; driver kicks a
 * real eventfd -> main-thread poller -> doorbell -> worker pops -> used entry
 * visible), p50/p99 parsed from its output (with `--nice`, run at that nice in
 * its own autogroup).
 *
 * `--nice N` (e.g. -10; needs root): every thread of the back-end and the
 * front-end under test, and their scheduler autogroups (each managed process
 * has its own session), get nice N once the device is up, so that on a
 * machine shared with other work both back-ends get most of their pinned
 * core: the same treatment for A and B.
 *
 * Prints a table and writes JSON to bench/out/perf-compare-<time>.json.
 * (bench/dist/net-vs-dpdk.js, written alongside, runs the 1-pair 64/1500 B part
 * of this comparison; this script adds 2 pairs, GC/RSS, wake-up latency, the
 * nice treatment, ours-vs-ours A/B and the JSON file.)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus as osCpus, loadavg, availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ManagedProcess,
  Testpmd,
  acquirePeerLock,
  isTestpmdAvailable,
  makeTempDir,
  removeDir,
  sleep,
  socketPath,
  waitForPath,
} from '@vhost-ts/peers';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const CLI = path.join(ROOT, 'packages/cli/dist/main.js');
const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64

interface Options {
  pairs: number;
  measureMs: number;
  warmupMs: number;
  sizes: number[];
  queues: number[];
  txFirst: number;
  gcSeconds: number;
  latency: boolean;
  oursArgs: string[];
  /** When set, B is ours again with these extra arguments (an ours-vs-ours A/B), not DPDK. */
  bOursArgs: string[] | null;
  /** CPUs of our workers with 2 queue pairs (default 1,0: one worker per core). */
  cpus2: string;
  /** Node flags for our daemon (e.g. --cpu-prof). */
  oursNodeArgs: string[];
  /** Script to run instead of the CLI (experiments; same arguments). */
  oursScript: string;
  /** B = ours from this CLI script (another build), instead of DPDK. */
  bOursScript: string | null;
  tag: string;
  /** Nice value given to every thread of the back-end and front-end under test (0 = leave). */
  nice: number;
  /** Print the tail of our daemon's output after each run. */
  debug: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { pairs: 5, measureMs: 3000, warmupMs: 1500, sizes: [64, 1500], queues: [1, 2], txFirst: 4, gcSeconds: 30, latency: true, oursArgs: [], bOursArgs: null, cpus2: '1,0', oursNodeArgs: [], oursScript: CLI, bOursScript: null, tag: '', debug: false, nice: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--pairs') o.pairs = Number(v());
    else if (a === '--measure-ms') o.measureMs = Number(v());
    else if (a === '--warmup-ms') o.warmupMs = Number(v());
    else if (a === '--sizes') o.sizes = v().split(',').map(Number);
    else if (a === '--queues') o.queues = v().split(',').map(Number);
    else if (a === '--tx-first') o.txFirst = Number(v());
    else if (a === '--gc-seconds') o.gcSeconds = Number(v());
    else if (a === '--no-gc') o.gcSeconds = 0;
    else if (a === '--no-latency') o.latency = false;
    else if (a === '--ours-arg') o.oursArgs.push(v());
    else if (a === '--b-ours-arg') (o.bOursArgs ??= []).push(v());
    else if (a === '--cpus2') o.cpus2 = v();
    else if (a === '--ours-node-arg') o.oursNodeArgs.push(v());
    else if (a === '--ours-script') o.oursScript = path.resolve(v());
    else if (a === '--b-ours-script') o.bOursScript = path.resolve(v());
    else if (a === '--tag') o.tag = v();
    else if (a === '--nice') o.nice = Number(v());
    else if (a === '--debug') o.debug = true;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mpps = (x: number): string => (x / 1e6).toFixed(3);

/** utime + stime of a process (all threads), in ns. */
function cpuNs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // Fields after "(comm)": state is field 3 (index 0 here); utime 14, stime 15.
  return ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK;
}

/** Sets the nice value of every thread of a process (Linux: nice is per thread). */
function reniceAll(pid: number, nice: number): void {
  for (const t of readdirSync(`/proc/${pid}/task`)) spawnSync('renice', ['-n', String(nice), '-p', t], { stdio: 'ignore' });
  // Managed processes run in their own session, hence their own scheduler autogroup
  // (kernel.sched_autogroup_enabled): between groups only the group's nice counts.
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch {
    /* no autogroups on this kernel */
  }
}

/** CPU ns per thread (name/tid) of a process. */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const name = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      out.set(`${name}/${t}`, ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK);
    } catch {
      /* exited */
    }
  }
  return out;
}

function rssKiB(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : NaN;
}

type Kind = 'ours' | 'dpdk';

interface Backend {
  pid: number;
  proc: ManagedProcess;
  close(): Promise<unknown>;
}

async function startOurs(sock: string, queues: number, o: Options, nodeFlags: string[] = [], extra: string[] = [], script = o.oursScript): Promise<Backend> {
  const cpus = queues === 1 ? '1' : o.cpus2;
  const args = [...o.oursNodeArgs, ...nodeFlags, script, 'net', `--socket-path=${sock}`, '--module=echo', `--queues=${queues}`, `--cpus=${cpus}`, '--stats-interval=0', ...o.oursArgs, ...extra];
  const proc = new ManagedProcess(process.execPath, args, { name: 'vhost-ts-net' });
  try {
    await proc.waitForOutput(/net back-end: module/, { timeoutMs: 20_000 });
    await waitForPath(sock, { timeoutMs: 5000 });
  } catch (e) {
    await proc.close();
    throw e;
  }
  return { pid: proc.pid, proc, close: () => proc.close({ graceful: () => proc.signal('SIGTERM'), graceMs: 5000 }) };
}

async function startDpdk(sock: string, queues: number): Promise<Backend> {
  const be = await Testpmd.start({ role: 'backend', socketPath: sock, queues, forwardMode: 'io', cpus: { main: 0, forward: 1 }, name: 'testpmd-vhost' });
  return { pid: be.proc.pid, proc: be.proc, close: () => be.close() };
}

async function startFrontend(sock: string, queues: number, size: number): Promise<Testpmd> {
  return Testpmd.start({
    role: 'frontend',
    socketPath: sock,
    queues,
    forwardMode: 'io',
    txpkts: size,
    autoStart: false,
    cpus: { main: 1, forward: 0 },
    name: 'testpmd-virtio-user',
  });
}

/**
 * Starts the front-end on `sock`, waits for the link, gives both processes the nice treatment,
 * seeds the io loop (start tx_first) and lets it warm up. The caller closes the front-end.
 */
async function startLoop(be: Backend, sock: string, queues: number, size: number, o: Options): Promise<Testpmd> {
  const fe = await startFrontend(sock, queues, size);
  try {
    await fe.waitForLinkUp(0, 15_000);
    if (o.nice !== 0) {
      reniceAll(be.pid, o.nice);
      reniceAll(fe.proc.pid, o.nice);
    }
    await fe.start(o.txFirst);
    await sleep(o.warmupMs);
    return fe;
  } catch (e) {
    await fe.close();
    throw e;
  }
}

interface RunResult {
  kind: Kind;
  size: number;
  queues: number;
  pps: number;
  cpuNsPerPkt: number;
  beCpuPct: number;
  /** The front-end testpmd's CPU use over the window (all its threads). */
  feCpuPct: number;
  seconds: number;
  packets: number;
}

/** One back-end run: start back-end, front-end, seed, warm up, measure. */
async function runOne(dir: string, kind: Kind, size: number, queues: number, o: Options, n: number): Promise<RunResult> {
  const sock = socketPath(dir, `${kind}-${n}.sock`);
  const be =
    kind === 'ours'
      ? await startOurs(sock, queues, o)
      : o.bOursArgs !== null || o.bOursScript !== null
        ? await startOurs(sock, queues, o, [], o.bOursArgs ?? [], o.bOursScript ?? o.oursScript)
        : await startDpdk(sock, queues);
  let fe: Testpmd | null = null;
  try {
    fe = await startLoop(be, sock, queues, size, o);
    const a = await fe.portStat(0);
    const c0 = cpuNs(be.pid);
    const f0 = cpuNs(fe.proc.pid);
    const th0 = o.debug ? threadCpu(be.pid) : null;
    const t0 = performance.now();
    await sleep(o.measureMs);
    const b = await fe.portStat(0);
    const c1 = cpuNs(be.pid);
    const f1 = cpuNs(fe.proc.pid);
    if (th0 !== null) {
      const th1 = threadCpu(be.pid);
      const el = (performance.now() - t0) * 1e6;
      console.log(`  threads of ${kind} (CPU %): ${[...th1].map(([k, v]) => `${k} ${(((v - (th0.get(k) ?? 0)) / el) * 100).toFixed(0)}`).join(', ')}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const packets = b.rxPackets - a.rxPackets;
    const cpu = c1 - c0;
    return {
      kind,
      size,
      queues,
      pps: packets / seconds,
      cpuNsPerPkt: packets > 0 ? cpu / packets : NaN,
      beCpuPct: (cpu / (seconds * 1e9)) * 100,
      feCpuPct: ((f1 - f0) / (seconds * 1e9)) * 100,
      seconds,
      packets,
    };
  } finally {
    await fe?.close().catch(() => undefined);
    await be.close().catch(() => undefined);
    if (o.debug && kind === 'ours') console.log(be.proc.output.text().slice(-1500));
  }
}

interface CaseRow {
  size: number;
  queues: number;
  ours: RunResult[];
  dpdk: RunResult[];
}

interface GcResult {
  seconds: number;
  pps: number;
  /** Collections inside the window per isolate, in order of first appearance (the first is the main thread). */
  perIsolate: { isolate: string; gcs: number; kinds: Record<string, number> }[];
  rssKiB: number[];
}

/** The GC/RSS run: ours under --trace-gc, 64 B, 1 pair. */
async function gcRun(dir: string, o: Options): Promise<GcResult> {
  const sock = socketPath(dir, 'gc.sock');
  const be = await startOurs(sock, 1, o, ['--trace-gc']);
  let fe: Testpmd | null = null;
  try {
    fe = await startLoop(be, sock, 1, 64, o);
    const from = be.proc.output.position;
    const a = await fe.portStat(0);
    const t0 = performance.now();
    const rss: number[] = [];
    for (let s = 0; s < o.gcSeconds; s++) {
      rss.push(rssKiB(be.pid));
      await sleep(1000);
    }
    rss.push(rssKiB(be.pid));
    const to = be.proc.output.position;
    const b = await fe.portStat(0);
    const seconds = (performance.now() - t0) / 1000;
    // Isolates in order of first appearance over the whole output (main first).
    const all = be.proc.output.text();
    const order: string[] = [];
    for (const m of all.matchAll(/^\[\d+:(0x[0-9a-f]+)\]/gm)) if (!order.includes(m[1]!)) order.push(m[1]!);
    const win = be.proc.output.since(from).slice(0, to - from);
    const per = new Map<string, { gcs: number; kinds: Record<string, number> }>();
    for (const iso of order) per.set(iso, { gcs: 0, kinds: {} });
    for (const m of win.matchAll(/^\[\d+:(0x[0-9a-f]+)\]\s+\d+ ms: ([A-Za-z-]+(?: [A-Za-z-]+)?)/gm)) {
      const e = per.get(m[1]!) ?? { gcs: 0, kinds: {} };
      e.gcs++;
      e.kinds[m[2]!] = (e.kinds[m[2]!] ?? 0) + 1;
      per.set(m[1]!, e);
    }
    return {
      seconds,
      pps: (b.rxPackets - a.rxPackets) / seconds,
      perIsolate: [...per].map(([isolate, v]) => ({ isolate, ...v })),
      rssKiB: rss,
    };
  } finally {
    await fe?.close().catch(() => undefined);
    await be.close().catch(() => undefined);
  }
}

interface LatencyResult {
  p50us: number;
  p99us: number;
  line: string;
}

function latencyRun(nice: number): LatencyResult | { error: string } {
  const dp = [process.execPath, path.join(HERE, 'dataplane.js'), '--time', '300', '--gc-time', '1000', '--samples', '3000'];
  // With --nice: its own session (so its own scheduler autogroup) at that nice, like the runs above.
  const r =
    nice === 0
      ? spawnSync(dp[0]!, dp.slice(1), { encoding: 'utf8', timeout: 180_000 })
      : spawnSync('setsid', ['sh', '-c', `echo ${nice} > /proc/self/autogroup; exec nice -n ${nice} "$@"`, 'sh', ...dp], { encoding: 'utf8', timeout: 180_000 });
  const m = r.stdout.match(/p50 ([\d.]+) us, p90 [\d.]+ us, p99 ([\d.]+) us[^\n]*/);
  if (m === null) return { error: `dataplane.js gave no latency line (status ${r.status}): ${r.stderr.slice(-500)}` };
  return { p50us: Number(m[1]), p99us: Number(m[2]), line: m[0] };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const avail = isTestpmdAvailable();
  if (!avail.ok) throw new Error(avail.reason);
  const startedAt = new Date();
  const cpuModel = osCpus()[0]?.model ?? 'unknown';
  const loads: number[][] = [loadavg()];
  const git = spawnSync('git', ['-C', ROOT, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' }).stdout.trim();
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--short', '--', 'packages/virtio/src', 'workers/src', 'packages/net/src'], { encoding: 'utf8' }).stdout.trim();
  const command = `node bench/dist/perf-compare.js ${process.argv.slice(2).join(' ')}`.trim();
  console.log(`# perf-compare ${startedAt.toISOString()} ${o.tag}`);
  console.log(`# ${availableParallelism()} CPUs, ${cpuModel}, node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`# commit ${git}${dirty ? ` (uncommitted: ${dirty.replace(/\n/g, '; ')})` : ''}`);
  console.log(`# ${command}`);

  const release = await acquirePeerLock();
  const dir = await makeTempDir('perf-cmp');
  const rows: CaseRow[] = [];
  let gc: GcResult | null = null;
  let latency: LatencyResult | { error: string } | null = null;
  let n = 0;
  try {
    for (const q of o.pairs > 0 ? o.queues : []) {
      for (const size of o.sizes) {
        const row: CaseRow = { size, queues: q, ours: [], dpdk: [] };
        for (let p = 0; p < o.pairs; p++) {
          for (const kind of ['ours', 'dpdk'] as const) {
            const r = await runOne(dir, kind, size, q, o, n++);
            row[kind].push(r);
            console.log(JSON.stringify({ type: 'run', pair: p, ...r, pps: Math.round(r.pps), cpuNsPerPkt: Math.round(r.cpuNsPerPkt), beCpuPct: Math.round(r.beCpuPct), feCpuPct: Math.round(r.feCpuPct) }));
          }
          loads.push(loadavg());
        }
        rows.push(row);
      }
    }
    if (o.gcSeconds > 0) {
      gc = await gcRun(dir, o);
      loads.push(loadavg());
      console.log(JSON.stringify({ type: 'gc', ...gc }));
    }
  } finally {
    await removeDir(dir);
    await release();
  }
  if (o.latency) {
    latency = latencyRun(o.nice);
    console.log(JSON.stringify({ type: 'latency', ...latency }));
  }

  // ---- Table.
  const out: string[] = [];
  out.push('');
  out.push(`vhost-ts net --module=echo vs DPDK vhost PMD (io), same testpmd virtio-user io front-end (start tx_first ${o.txFirst}), ${o.pairs} A/B pairs, ${o.measureMs} ms windows after ${o.warmupMs} ms warm-up${o.nice !== 0 ? `, back-end and front-end threads at nice ${o.nice}` : ''}`);
  out.push('');
  out.push('| pairs | size | ours Mpps median (min–max) | DPDK Mpps median (min–max) | ours/DPDK | ours CPU-ns/pkt | DPDK CPU-ns/pkt | ours back-end CPU % |');
  out.push('|---:|---:|---|---|---:|---:|---:|---:|');
  const summary = rows.map((r) => {
    const op = r.ours.map((x) => x.pps);
    const dp = r.dpdk.map((x) => x.pps);
    const s = {
      queues: r.queues,
      size: r.size,
      ours: { median: median(op), min: Math.min(...op), max: Math.max(...op), runs: op.map(Math.round), cpuNsPerPkt: median(r.ours.map((x) => x.cpuNsPerPkt)), cpuPct: median(r.ours.map((x) => x.beCpuPct)) },
      dpdk: { median: median(dp), min: Math.min(...dp), max: Math.max(...dp), runs: dp.map(Math.round), cpuNsPerPkt: median(r.dpdk.map((x) => x.cpuNsPerPkt)), cpuPct: median(r.dpdk.map((x) => x.beCpuPct)) },
      ratio: median(op) / median(dp),
      pairRatios: op.map((x, i) => x / dp[i]!),
    };
    out.push(
      `| ${r.queues} | ${r.size} | ${mpps(s.ours.median)} (${mpps(s.ours.min)}–${mpps(s.ours.max)}) | ${mpps(s.dpdk.median)} (${mpps(s.dpdk.min)}–${mpps(s.dpdk.max)}) | ${s.ratio.toFixed(2)} | ${s.ours.cpuNsPerPkt.toFixed(0)} | ${s.dpdk.cpuNsPerPkt.toFixed(0)} | ${s.ours.cpuPct.toFixed(0)} |`,
    );
    return s;
  });
  out.push('');
  out.push('runs (Mpps), A/B order:');
  for (const r of rows) out.push(`  ${r.queues}q ${r.size} B: ours ${r.ours.map((x) => mpps(x.pps)).join(' ')} | dpdk ${r.dpdk.map((x) => mpps(x.pps)).join(' ')}`);
  for (const s of summary) {
    if (s.queues === 1) continue;
    const one = summary.find((x) => x.queues === 1 && x.size === s.size);
    if (one) out.push(`  ${s.queues} pairs / 1 pair at ${s.size} B: ours ${(s.ours.median / one.ours.median).toFixed(2)}× (pps), CPU-ns/pkt ${s.ours.cpuNsPerPkt.toFixed(0)} vs ${one.ours.cpuNsPerPkt.toFixed(0)}; DPDK ${(s.dpdk.median / one.dpdk.median).toFixed(2)}×`);
  }
  if (gc !== null) {
    const r = gc.rssKiB;
    out.push(
      `GC in ${gc.seconds.toFixed(1)} s of ours at 64 B (${mpps(gc.pps)} Mpps): ${gc.perIsolate.map((x, i) => `${i === 0 ? 'main' : `isolate ${i}`} ${x.gcs}${x.gcs ? ` ${JSON.stringify(x.kinds)}` : ''}`).join(', ')}; RSS MiB first ${(r[0]! / 1024).toFixed(1)}, last ${(r.at(-1)! / 1024).toFixed(1)}, min ${(Math.min(...r) / 1024).toFixed(1)}, max ${(Math.max(...r) / 1024).toFixed(1)}`,
    );
  }
  if (latency !== null) out.push('error' in latency ? `wake-up latency: ${latency.error}` : `wake-up latency (dataplane.js): p50 ${latency.p50us} us, p99 ${latency.p99us} us`);
  out.push(`load average samples: ${loads.map((l) => l[0]!.toFixed(2)).join(' ')}`);
  console.log(out.join('\n'));

  const outDir = path.join(ROOT, 'bench/out');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `perf-compare-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      { startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), command, tag: o.tag, commit: git, uncommitted: dirty, machine: { nproc: availableParallelism(), cpuModel, node: process.version }, loadavg: loads, options: o, summary, runs: rows, gc, latency },
      null,
      2,
    ),
  );
  console.log(`\nJSON: ${path.relative(ROOT, file)}`);
}

await main();
