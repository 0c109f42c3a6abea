/**
 * `vhost-ts net --module=echo` next to DPDK's vhost PMD (`net_vhost0`, io
 * forwarding) as the back-end of the same DPDK virtio-user front-end loop:
 *
 *   node bench/dist/net-vs-dpdk.js [--pairs N] [--measure-ms MS] [--sizes 64,1500] [--tx-first N] [--packed] [--spin-us N]
 *
 * (build first: `npx tsc -b bench packages/cli`). For every frame size, runs
 * alternate A (vhost-ts) and B (DPDK) for `--pairs` pairs (default 3); each
 * run starts a fresh back-end and a fresh front-end: `dpdk-testpmd --vdev
 * net_virtio_user0` in `io` mode, seeded with `start tx_first N` (default 4
 * bursts of 32), so every frame goes back and forth between the two.
 * Figures per run, over `--measure-ms` (default 3000) after a 1 s warm-up:
 * - packets/s: the front-end's RX packets/s (`show port stats` deltas) — each
 *   of them went through the back-end once;
 * - back-end CPU ns/packet: utime + stime of the back-end process
 *   (/proc/<pid>/stat, 100 Hz ticks) over the same window, divided by those
 *   packets. DPDK's forwarding lcore busy-polls, so its figure is about one
 *   core / pps; ours spins 20 µs after the last work, then sleeps.
 * Medians per size and back-end, and the ratio A/B, are printed (a table and
 * JSON lines). Placement is the same for both: the back-end forwards on CPU 1
 * (our queue worker pinned with --cpus=1; DPDK's lcore 1@1), the front-end's
 * forwarding lcore on CPU 0. This machine is noisy: compare within one run.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ManagedProcess,
  acquirePeerLock,
  isTestpmdAvailable,
  makeTempDir,
  removeDir,
  repoRoot,
  sleep,
  socketPath,
  waitForPath,
  Testpmd,
} from '@vhost-ts/peers';

interface Options {
  pairs: number;
  measureMs: number;
  sizes: number[];
  txFirst: number;
  packed: boolean;
  /** --spin-us for our daemon (default: its own). */
  spinUs: number | null;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { pairs: 3, measureMs: 3000, sizes: [64, 1500], txFirst: 4, packed: false, spinUs: null };
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
    else if (a === '--tx-first') o.txFirst = Number(v());
    else if (a === '--packed') o.packed = true;
    else if (a === '--spin-us') o.spinUs = Number(v());
    else throw new Error(`unknown option ${a}`);
  }
  if (!(o.pairs >= 1) || !(o.measureMs >= 500) || !(o.txFirst >= 1)) throw new Error('bad --pairs / --measure-ms / --tx-first');
  return o;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** utime + stime of a process in seconds (clock ticks of 100 Hz, the Linux USER_HZ). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

interface Sample {
  pps: number;
  cpuNsPerPacket: number;
  /** Back-end CPU use over the window, in cores. */
  cores: number;
}

/** A running back-end: its socket, its pid (for CPU time), how to wait until it serves the front-end, how to stop it. */
interface Backend {
  socket: string;
  pid: number;
  /** Resolves once the back-end serves the front-end's device (output printed after `since`). */
  ready(since: number): Promise<void>;
  position(): number;
  close(): Promise<void>;
}

const CLI = path.join(repoRoot(), 'packages/cli/dist/main.js');

async function startOurs(dir: string, run: number, o: Options): Promise<Backend> {
  const socket = socketPath(dir, `ours${run}.sock`);
  const args = [CLI, 'net', `--socket-path=${socket}`, '--queues=1', '--module=echo', '--cpus=1', '--stats-interval=0'];
  if (o.spinUs !== null) args.push(`--spin-us=${o.spinUs}`);
  const proc = new ManagedProcess(process.execPath, args, {
    name: 'vhost-ts-net',
  });
  try {
    await waitForPath(socket, { timeoutMs: 20_000, abortIf: () => (proc.running ? undefined : proc.describe()) });
  } catch (e) {
    await proc.close();
    throw e;
  }
  return {
    socket,
    pid: proc.pid,
    position: () => proc.output.position,
    ready: async (since) => {
      await proc.waitForOutput(/device \d+ started/, { since, timeoutMs: 15_000 });
    },
    close: async () => {
      await proc.close({ termMs: 3000 });
    },
  };
}

async function startDpdk(dir: string, run: number): Promise<Backend> {
  const socket = socketPath(dir, `dpdk${run}.sock`);
  const be = await Testpmd.start({ role: 'backend', socketPath: socket, forwardMode: 'io', name: 'testpmd-vhost' });
  return {
    socket,
    pid: be.proc.pid,
    position: () => be.proc.output.position,
    ready: async () => {
      await be.waitForLinkUp(0, 15_000);
    },
    close: async () => {
      await be.close();
    },
  };
}

/** One run: front-end io loop through `backend`, measured. */
async function measure(backend: Backend, o: Options, size: number): Promise<Sample> {
  const since = backend.position();
  const fe = await Testpmd.start({
    role: 'frontend',
    socketPath: backend.socket,
    forwardMode: 'io',
    autoStart: false,
    txpkts: size,
    packedVq: o.packed,
    name: 'testpmd-virtio-user',
  });
  try {
    await backend.ready(since);
    await fe.start(o.txFirst);
    await sleep(1000);
    const cpu0 = cpuSeconds(backend.pid);
    const t0 = performance.now();
    const rate = await fe.measureRate(o.measureMs);
    const cpu1 = cpuSeconds(backend.pid);
    const secs = (performance.now() - t0) / 1000;
    await fe.stop();
    if (rate.rxPackets <= 0) throw new Error('no packets went around the loop');
    return { pps: rate.rxPps, cpuNsPerPacket: ((cpu1 - cpu0) * 1e9) / rate.rxPackets, cores: (cpu1 - cpu0) / secs };
  } finally {
    await fe.close();
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const avail = isTestpmdAvailable();
  if (!avail.ok) throw new Error(avail.reason);
  const release = await acquirePeerLock();
  const dir = await makeTempDir('net-vs-dpdk');
  const results: { size: number; ours: Sample[]; dpdk: Sample[] }[] = [];
  let run = 0;
  try {
    for (const size of o.sizes) {
      const r = { size, ours: [] as Sample[], dpdk: [] as Sample[] };
      results.push(r);
      for (let p = 0; p < o.pairs; p++) {
        for (const which of ['ours', 'dpdk'] as const) {
          const be = which === 'ours' ? await startOurs(dir, run++, o) : await startDpdk(dir, run++);
          try {
            const s = await measure(be, o, size);
            r[which].push(s);
            console.log(
              JSON.stringify({ type: 'run', size, backend: which === 'ours' ? 'vhost-ts' : 'dpdk-vhost', pair: p, pps: Math.round(s.pps), cpuNsPerPacket: Math.round(s.cpuNsPerPacket), cores: +s.cores.toFixed(2) }),
            );
          } finally {
            await be.close();
          }
        }
      }
    }
  } finally {
    await removeDir(dir);
    await release();
  }

  console.log(`\nload average at the end: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  console.log(`vhost-ts net --module=echo${o.spinUs !== null ? ` --spin-us=${o.spinUs}` : ''} vs DPDK vhost PMD (io), testpmd virtio-user io loop (start tx_first ${o.txFirst}), ${o.packed ? 'packed' : 'split'} ring, 1 queue pair, medians of ${o.pairs} A/B pairs`);
  console.log('size   vhost-ts Mpps  DPDK Mpps  ratio   vhost-ts ns/pkt  DPDK ns/pkt (back-end CPU)');
  for (const r of results) {
    const a = median(r.ours.map((s) => s.pps));
    const b = median(r.dpdk.map((s) => s.pps));
    const ca = median(r.ours.map((s) => s.cpuNsPerPacket));
    const cb = median(r.dpdk.map((s) => s.cpuNsPerPacket));
    console.log(
      `${String(r.size).padEnd(6)} ${(a / 1e6).toFixed(3).padStart(13)} ${(b / 1e6).toFixed(3).padStart(10)} ${(a / b).toFixed(3).padStart(6)} ${ca.toFixed(0).padStart(16)} ${cb.toFixed(0).padStart(12)}`,
    );
    console.log(
      JSON.stringify({
        type: 'median',
        size: r.size,
        vhostTsPps: Math.round(a),
        dpdkPps: Math.round(b),
        ratio: +(a / b).toFixed(4),
        vhostTsCpuNsPerPacket: Math.round(ca),
        dpdkCpuNsPerPacket: Math.round(cb),
        vhostTs: r.ours.map((s) => Math.round(s.pps)),
        dpdk: r.dpdk.map((s) => Math.round(s.pps)),
      }),
    );
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
