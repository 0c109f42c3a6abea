/**
 * `vhost-ts demo`: the main job on an embedded default. A virtio-net back-end
 * with the `echo` module serves a socket from this process (control plane on
 * the main thread, one queue worker per queue pair); the built-in TypeScript
 * front-end runs in a child process, connects, negotiates, and loops traffic
 * on every queue pair, checking every frame that comes back. The back-end's
 * live per-queue view runs while traffic flows; a final summary follows.
 * No external program is needed.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetDriver, type NetDeviceStats } from '@vhost-ts/net';
import { silentLogger, stderrLogger, type Logger } from '@vhost-ts/vhost';
import { QueueWorkerManager } from '@vhost-ts/workers';
import { formatHelp, parseCpuList, parseOptions, UsageError, type OptionSpecs } from '../args.js';
import { LiveView, si, type MetricSpec, type Sample } from '../live-view.js';

const SPECS: OptionSpecs = {
  queues: { kind: 'int', min: 1, max: 16, help: 'queue pairs (default 2)' },
  seconds: { kind: 'int', min: 1, max: 3600, help: 'seconds of traffic (default 5)' },
  size: { kind: 'int', min: 60, max: 9000, help: 'frame size in bytes (default 64)' },
  packed: { kind: 'flag', help: 'use packed virtqueues' },
  cpus: { kind: 'string', help: 'pin the back-end queue workers to these CPUs (e.g. 1)' },
  'stats-interval': { kind: 'int', min: 1, max: 60, help: 'seconds between live-view updates (default 1)' },
  verbose: { kind: 'flag', help: 'log the control plane on stderr' },
  help: { kind: 'flag', help: 'this help' },
};

const METRICS: MetricSpec[] = [
  { key: 'rxPackets', label: 'pps', kind: 'rate', unit: 'count' },
  { key: 'rxBytes', label: 'bps', kind: 'rate', unit: 'bits' },
  { key: 'drops', label: 'drops', kind: 'total', unit: 'count' },
  { key: 'wakeups', label: 'wakeups/s', kind: 'rate', unit: 'count' },
];

/** The front-end's final JSON line (the fields the demo reads). */
interface FrontendSummary {
  type: 'summary';
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  bad: number;
  reordered: number;
  receivedBytes: number;
  seconds: number;
  rxPps: number;
  queues: { sent: number; received: number; lost: number }[];
}

function sampleOf(stats: readonly NetDeviceStats[]): Sample {
  const out: Sample = {};
  for (const dev of stats) {
    for (const q of dev.queues) {
      const r = (out[`q${q.pair}`] ??= { rxPackets: 0, rxBytes: 0, drops: 0, wakeups: 0 });
      // The back-end's TX direction is the guest's RX: what the echo module returned.
      r.rxPackets! += q.txPackets;
      r.rxBytes! += q.txBytes;
      r.drops! += q.rxDropped + q.txErrors;
      r.wakeups! += q.wakeups;
    }
  }
  return out;
}

/** Runs the demo; resolves to 0 when every frame came back intact, 1 otherwise. */
export async function runDemo(argv: string[]): Promise<number> {
  const o = parseOptions(argv, SPECS);
  if (o.help === true) {
    console.log(formatHelp('usage: vhost-ts demo [--queues=N] [--seconds=S] [--size=BYTES] [--packed]', SPECS));
    return 0;
  }
  const queues = (o.queues as number | undefined) ?? 2;
  const seconds = (o.seconds as number | undefined) ?? 5;
  const size = (o.size as number | undefined) ?? 64;
  const packed = o.packed === true;
  const cpus = o.cpus === undefined ? undefined : parseCpuList(o.cpus as string);
  const interval = (o['stats-interval'] as number | undefined) ?? 1;
  const logger: Logger = o.verbose === true ? stderrLogger() : { ...silentLogger, error: stderrLogger().error };

  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-demo-'));
  const socketPath = path.join(dir, 'net.sock');
  const manager = new QueueWorkerManager();
  const driver = new NetDriver({
    path: socketPath,
    queuePairs: queues,
    module: 'echo',
    manager,
    logger,
    ...(cpus !== undefined ? { cpus } : {}),
  });
  let view: LiveView | null = null;
  let child: ReturnType<typeof spawn> | null = null;
  const onSignal = (): void => {
    child?.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await driver.start();
    console.log(
      `vhost-ts demo: virtio-net back-end (module echo, ${queues} queue pair${queues > 1 ? 's' : ''}, ${packed ? 'packed' : 'split'} rings) ` +
        `on ${socketPath}\n  front-end: the built-in TypeScript virtio-user in a child process, ${size}-byte frames for ${seconds} s, every frame checked`,
    );
    const main = fileURLToPath(new URL('../main.js', import.meta.url));
    const args = [
      main, 'frontend', `--socket-path=${socketPath}`, '--mode=loop', `--queues=${queues}`, `--seconds=${seconds}`,
      `--size=${size}`, '--json', ...(packed ? ['--packed'] : []),
    ];
    const lines: string[] = [];
    let stderr = '';
    child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let pending = '';
    child.stdout!.on('data', (d: Buffer) => {
      pending += d.toString();
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      lines.push(...parts.filter((l) => l.length > 0));
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number>((resolve) => child!.on('close', (code) => resolve(code ?? 1)));
    // The device (and its counters) goes away when the front-end disconnects:
    // keep the last sample taken while it was connected.
    let lastBackendPackets = 0;
    const sample = async (): Promise<Sample> => {
      const stats = await driver.stats();
      const total = stats.reduce((a, d) => a + d.queues.reduce((b, q) => b + q.txPackets, 0), 0);
      if (total > 0) lastBackendPackets = total;
      return sampleOf(stats);
    };
    view = new LiveView({ metrics: METRICS, intervalMs: interval * 1000, sample, tags: { command: 'demo' } });
    view.start();
    const timer = setTimeout(() => child?.kill('SIGKILL'), (seconds + 30) * 1000);
    const code = await exited;
    clearTimeout(timer);
    view.stop();
    view = null;
    const summaryLine = [...lines, pending].reverse().find((l) => l.includes('"type":"summary"'));
    if (summaryLine === undefined) {
      console.error(`vhost-ts demo: the front-end exited with status ${code} without a summary\n${stderr.trim()}`);
      return 1;
    }
    const s = JSON.parse(summaryLine) as FrontendSummary;
    const mpps = s.received / s.seconds / 1e6;
    const gbits = (s.receivedBytes * 8) / s.seconds / 1e9;
    const ok = code === 0 && s.received > 0 && s.lost === 0 && s.duplicated === 0 && s.bad === 0;
    console.log(
      [
        `summary: ${ok ? 'OK' : 'FAILED'}`,
        `  frames sent ${s.sent}, echoed back ${s.received} (${si(s.received)}), lost ${s.lost}, duplicated ${s.duplicated}, corrupted ${s.bad}, reordered ${s.reordered}`,
        `  ${mpps.toFixed(3)} Mpps, ${gbits.toFixed(3)} Gbit/s over ${s.seconds.toFixed(1)} s (${size}-byte frames, ${queues} queue pair${queues > 1 ? 's' : ''})`,
        `  per queue pair: ${s.queues.map((q, i) => `q${i} ${q.received}/${q.sent}`).join(', ')}`,
        `  back-end queue workers echoed at least ${lastBackendPackets} frames (last live sample)`,
      ].join('\n'),
    );
    console.log(JSON.stringify({ type: 'demo-summary', ok, queues, size, packed, sent: s.sent, received: s.received, lost: s.lost, duplicated: s.duplicated, bad: s.bad, mpps, gbits, seconds: s.seconds }));
    if (!ok && stderr.trim().length > 0) console.error(stderr.trim());
    return ok ? 0 : 1;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    console.error(`vhost-ts demo: ${(err as Error).message}`);
    return 1;
  } finally {
    view?.stop();
    if (child !== null && child.exitCode === null) child.kill('SIGKILL');
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await driver.stop().catch((e: unknown) => logger.error(`stop: ${(e as Error).message}`));
    await manager.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}
