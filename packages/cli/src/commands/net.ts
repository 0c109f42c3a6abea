/**
 * `vhost-ts net`: the virtio-net back-end daemon. Follows the vhost-user
 * back-end program conventions: no daemonizing, `--socket-path=PATH` or
 * `--fd=N`, `--print-capabilities`, prompt exit on SIGTERM/SIGINT with every
 * worker, fd and mapping released.
 *
 * Several `--socket-path` options serve several ports from one process (the
 * `switch` module forwards between them; other modules serve each port on
 * its own).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { silentLogger, stderrLogger, type Logger } from '@vhost-ts/vhost';
import { QueueWorkerManager } from '@vhost-ts/workers';
import {
  NET_MODULES,
  NetDriver,
  SwitchFabric,
  netFeatureNames,
  netFeatures,
  parseIpv4,
  parseMac,
  resolveNetModule,
} from '@vhost-ts/net';
import { UsageError, formatHelp, parseCpuList, parseKeyValues, parseOptions, type OptionSpecs } from '../args.js';
import { LiveView, type MetricSpec, type Sample } from '../live-view.js';

const SPECS: OptionSpecs = {
  'socket-path': { kind: 'list', help: 'vhost-user socket (repeat for several ports, e.g. with --module=switch)' },
  fd: { kind: 'int', min: 0, help: 'inherited listening socket fd (instead of --socket-path)' },
  client: { kind: 'flag', help: 'connect to the socket (the front-end listens) and redial when it goes away' },
  queues: { kind: 'int', min: 1, max: 128, help: 'queue pairs per port (default 1)' },
  module: { kind: 'string', help: `processing module: ${Object.keys(NET_MODULES).join(', ')} or a path to a compiled module (default echo)` },
  'module-opt': { kind: 'list', help: 'module option key=value (repeatable), e.g. ip=10.0.0.1 for responder' },
  cpus: { kind: 'string', help: 'pin queue workers to these CPUs, e.g. 1 or 0,2-3 (worker i on the i-th, round robin)' },
  'spin-us': { kind: 'int', min: 0, max: 10_000_000, help: 'busy-poll this long after the last packet before sleeping (default 20 when pinned)' },
  mac: { kind: 'string', help: 'offer VIRTIO_NET_F_MAC with this address in the config space' },
  mtu: { kind: 'int', min: 68, max: 65535, help: 'offer VIRTIO_NET_F_MTU with this MTU (and accept NET_SET_MTU)' },
  'stats-interval': { kind: 'string', help: 'seconds between statistics lines (default 1; 0 = none)' },
  'print-capabilities': { kind: 'flag', help: 'print the back-end capabilities as JSON and exit' },
  quiet: { kind: 'flag', help: 'no log lines on stderr (errors only)' },
  help: { kind: 'flag', help: 'this help' },
};

const USAGE = 'usage: vhost-ts net --socket-path=PATH [--client] [--queues=N] [--module=NAME|PATH] [--module-opt k=v]... [--cpus=LIST] [--stats-interval=S]';

const METRICS: MetricSpec[] = [
  { key: 'rxPackets', label: 'rx-pps', kind: 'rate', unit: 'count' },
  { key: 'rxBytes', label: 'rx-bps', kind: 'rate', unit: 'bits' },
  { key: 'txPackets', label: 'tx-pps', kind: 'rate', unit: 'count' },
  { key: 'txBytes', label: 'tx-bps', kind: 'rate', unit: 'bits' },
  { key: 'drops', label: 'drops', kind: 'total', unit: 'count' },
  { key: 'wakeups', label: 'wakeups/s', kind: 'rate', unit: 'count' },
];

/** Runs the daemon until SIGTERM/SIGINT; resolves to the exit status. */
export async function runNet(argv: string[]): Promise<number> {
  const o = parseOptions(argv, SPECS);
  if (o.help === true) {
    console.log(formatHelp(USAGE, SPECS));
    return 0;
  }
  const queues = (o.queues as number | undefined) ?? 1;
  const moduleArg = (o.module as string | undefined) ?? 'echo';
  let module: ReturnType<typeof resolveNetModule>;
  try {
    module = resolveNetModule(moduleArg);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const mac = o.mac === undefined ? undefined : parseOrUsage(() => parseMac(o.mac as string));
  const mtu = o.mtu as number | undefined;
  if (o['print-capabilities'] === true) {
    const features = netFeatures({ queuePairs: queues, mtu: mtu !== undefined, mac: mac !== undefined, inOrder: module.shipped });
    console.log(JSON.stringify({ type: 'net', features: netFeatureNames(features) }));
    return 0;
  }

  const paths = (o['socket-path'] as string[] | undefined) ?? [];
  const fd = o.fd as number | undefined;
  if (paths.length === 0 && fd === undefined) throw new UsageError('give --socket-path=PATH or --fd=N');
  if (paths.length > 0 && fd !== undefined) throw new UsageError('--socket-path and --fd are exclusive');
  if (o.client === true && fd !== undefined) throw new UsageError('--client needs --socket-path (an inherited fd is a listening socket)');
  const moduleOptions = parseKeyValues((o['module-opt'] as string[] | undefined) ?? []);
  const cpus = o.cpus === undefined ? undefined : parseCpuList(o.cpus as string);
  const interval = parseOrUsage(() => {
    const s = Number((o['stats-interval'] as string | undefined) ?? '1');
    if (!Number.isFinite(s) || s < 0) throw new Error(`--stats-interval needs seconds >= 0, got '${o['stats-interval'] as string}'`);
    return s;
  });
  if (module.name === 'responder') {
    if (moduleOptions.ip === undefined) throw new UsageError('--module=responder needs --module-opt ip=A.B.C.D');
    parseOrUsage(() => parseIpv4(moduleOptions.ip!));
    if (moduleOptions.mac !== undefined) parseOrUsage(() => parseMac(moduleOptions.mac!));
  }
  const isSwitch = module.name === 'switch';
  if (isSwitch && queues !== 1) throw new UsageError('--module=switch serves one queue pair per port (--queues=1)');

  const logger: Logger = o.quiet === true ? { ...silentLogger, error: stderrLogger().error } : stderrLogger();
  const manager = new QueueWorkerManager();
  const collect = afterDisconnectGc();
  const ports = fd !== undefined ? [{ fd }] : paths.map((p) => ({ path: p }));
  const fabric = isSwitch ? SwitchFabric.create({ ports: ports.length, maxFrame: (mtu ?? 1500) + 18 }) : null;
  const drivers = ports.map(
    (port, i) =>
      new NetDriver({
        ...port,
        ...(o.client === true ? { client: true, reconnect: true } : {}),
        queuePairs: queues,
        module: module.url,
        moduleOptions,
        inOrder: module.shipped,
        ...(mac !== undefined ? { mac } : {}),
        ...(mtu !== undefined ? { mtu } : {}),
        ...(cpus !== undefined ? { cpus } : {}),
        ...(o['spin-us'] !== undefined ? { spinUs: o['spin-us'] as number } : {}),
        manager,
        logger,
        callbacks: { destroyConnection: () => collect() },
        ...(fabric !== null
          ? {
              onDeviceStarted: async (_dev, workers) => {
                await workers.remote(0).call('attach', fabric.sab, i);
              },
            }
          : {}),
      }),
  );

  // Signals first: a SIGTERM during start-up must still release what was set up.
  let stopRequested: () => void = () => {};
  const stopped = new Promise<string>((resolve) => {
    stopRequested = () => resolve('stop');
  });
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (++signals > 1) {
      logger.error(`second ${sig}: exiting at once`);
      process.exit(1);
    }
    logger.info(`${sig}: shutting down`);
    stopRequested();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let view: LiveView | null = null;
  try {
    for (const d of drivers) await d.start();
    logger.info(
      `net back-end: module ${module.name}, ${queues} queue pair(s), ${drivers.map((d) => d.vhost.path).join(', ')}${o.client === true ? ' (client)' : ''}`,
    );
    if (interval > 0) {
      view = new LiveView({
        metrics: METRICS,
        intervalMs: interval * 1000,
        sample: () => sample(drivers),
        tags: { command: 'net', module: module.name },
      });
      view.start();
    }
    await stopped;
  } finally {
    view?.stop();
    await Promise.all(drivers.map((d) => d.stop().catch((e: unknown) => logger.error(`stop ${d.vhost.path}: ${(e as Error).message}`))));
    await manager.stopAll();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  return 0;
}

/**
 * A front-end went away: its guest memory was released at once (the pages
 * are gone), but each released mapping stays reserved until V8 collects its
 * last SharedArrayBuffer, and V8 does not count external mappings as memory
 * pressure. A full collection shortly after a disconnect (rare) unmaps them
 * promptly, so a daemon serving many reconnects keeps a flat address space.
 */
function afterDisconnectGc(): () => void {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as (() => void) | undefined;
    } catch {
      gc = undefined;
    }
  }
  if (typeof gc !== 'function') return () => {};
  const run = gc;
  let timer: NodeJS.Timeout | undefined;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(run, 100);
    timer.unref();
  };
}

function parseOrUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Cumulative per-queue counters of every port: rows `q<i>` (one port) or `p<port>/q<i>`. */
async function sample(drivers: readonly NetDriver[]): Promise<Sample> {
  const out: Sample = {};
  const all = await Promise.all(drivers.map((d) => d.stats()));
  all.forEach((devices, port) => {
    for (const dev of devices) {
      for (const q of dev.queues) {
        const row = drivers.length > 1 ? `p${port}/q${q.pair}` : `q${q.pair}`;
        // Several connections on one port (a reconnect racing the old one): add them up.
        const r = (out[row] ??= { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: 0, wakeups: 0 });
        r.rxPackets! += q.rxPackets;
        r.rxBytes! += q.rxBytes;
        r.txPackets! += q.txPackets;
        r.txBytes! += q.txBytes;
        r.drops! += q.rxDropped + q.txErrors;
        r.wakeups! += q.wakeups;
      }
    }
  });
  return out;
}
