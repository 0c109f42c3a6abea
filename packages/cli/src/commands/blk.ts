/**
 * `vhost-ts blk`: the virtio-blk back-end daemon over a file or block device.
 * Follows the vhost-user back-end program conventions: no daemonizing,
 * `--socket-path=PATH` or `--fd=N`, `--print-capabilities`, `--blk-file`,
 * `--read-only`, prompt exit on SIGTERM/SIGINT with every worker, fd and
 * mapping released. SIGHUP re-reads the backing file's size and tells the
 * guest the new capacity (CONFIG_CHANGE_MSG).
 */
import { silentLogger, stderrLogger, type Logger } from '@vhost-ts/vhost';
import { BlkDriver, type IoMode } from '@vhost-ts/blk';
import { UsageError, formatHelp, parseCpuList, parseOptions, type OptionSpecs } from '../args.js';
import { LiveView, type MetricSpec, type Sample } from '../live-view.js';

const SPECS: OptionSpecs = {
  'socket-path': { kind: 'string', help: 'vhost-user socket to listen on (or connect to, with --client)' },
  fd: { kind: 'int', min: 0, help: 'inherited listening socket fd (instead of --socket-path)' },
  client: { kind: 'flag', help: 'connect to the socket (the front-end listens) and redial when it goes away' },
  'blk-file': { kind: 'string', help: 'backing file or block device (its size is the capacity)' },
  'read-only': { kind: 'flag', help: 'offer VIRTIO_BLK_F_RO; writes, discard and write-zeroes fail with IOERR' },
  queues: { kind: 'int', min: 1, max: 64, help: 'request queues (default 1), one queue worker each' },
  serial: { kind: 'string', help: 'GET_ID serial, at most 20 bytes (default: the file name)' },
  'block-size': { kind: 'int', min: 512, max: 4096, help: 'logical block size: 512 (default), 1024, 2048 or 4096' },
  io: { kind: 'string', help: 'file I/O in the queue workers: sync (default) or async (libuv threadpool)' },
  cpus: { kind: 'string', help: 'pin queue workers to these CPUs, e.g. 1 or 0,2-3' },
  'fault-delay-ms': { kind: 'int', min: 0, max: 60000, help: 'testing: hold every completion N ms (needs --io=async), so a killed back-end has requests in flight' },
  'stats-interval': { kind: 'string', help: 'seconds between per-queue statistics lines (default 1; 0 = none)' },
  'print-capabilities': { kind: 'flag', help: 'print the back-end capabilities as JSON and exit' },
  quiet: { kind: 'flag', help: 'no log lines on stderr (errors only)' },
  help: { kind: 'flag', help: 'this help' },
};

const USAGE =
  'usage: vhost-ts blk --socket-path=PATH --blk-file=FILE [--read-only] [--queues=N] [--client] [--fd=N] [--serial=ID] [--block-size=N] [--stats-interval=SECONDS]';

const METRICS: MetricSpec[] = [
  { key: 'requests', label: 'iops', kind: 'rate', unit: 'count' },
  { key: 'bytes', label: 'B/s', kind: 'rate', unit: 'bytes' },
  { key: 'depth', label: 'qd', kind: 'gauge', unit: 'count' },
  { key: 'errors', label: 'errors', kind: 'total', unit: 'count' },
];

/** Runs the daemon until SIGTERM/SIGINT; resolves to the exit status. */
export async function runBlk(argv: string[]): Promise<number> {
  const o = parseOptions(argv, SPECS);
  if (o.help === true) {
    console.log(formatHelp(USAGE, SPECS));
    return 0;
  }
  if (o['print-capabilities'] === true) {
    console.log(JSON.stringify({ type: 'blk', features: ['read-only', 'blk-file'] }));
    return 0;
  }
  const path = o['socket-path'] as string | undefined;
  const fd = o.fd as number | undefined;
  if (path === undefined && fd === undefined) throw new UsageError('give --socket-path=PATH or --fd=N');
  if (path !== undefined && fd !== undefined) throw new UsageError('--socket-path and --fd are exclusive');
  if (o.client === true && fd !== undefined) throw new UsageError('--client needs --socket-path (an inherited fd is a listening socket)');
  const blkFile = o['blk-file'] as string | undefined;
  if (blkFile === undefined) throw new UsageError('give --blk-file=FILE');
  const blockSize = (o['block-size'] as number | undefined) ?? 512;
  if (![512, 1024, 2048, 4096].includes(blockSize)) throw new UsageError(`--block-size must be 512, 1024, 2048 or 4096, got ${blockSize}`);
  const serial = o.serial as string | undefined;
  if (serial !== undefined && Buffer.byteLength(serial) > 20) throw new UsageError(`--serial is at most 20 bytes, got ${Buffer.byteLength(serial)}`);
  const io = ((o.io as string | undefined) ?? 'sync') as IoMode;
  if (io !== 'sync' && io !== 'async') throw new UsageError(`--io must be sync or async, got '${String(io)}'`);
  const cpus = o.cpus === undefined ? undefined : parseCpuList(o.cpus as string);
  const interval = Number((o['stats-interval'] as string | undefined) ?? '1');
  if (!Number.isFinite(interval) || interval < 0) throw new UsageError(`--stats-interval needs seconds >= 0, got '${o['stats-interval'] as string}'`);
  const queues = (o.queues as number | undefined) ?? 1;
  const delay = (o['fault-delay-ms'] as number | undefined) ?? 0;
  if (delay > 0 && io !== 'async') throw new UsageError('--fault-delay-ms needs --io=async');
  const logger: Logger = o.quiet === true ? { ...silentLogger, error: stderrLogger().error } : stderrLogger();

  let blk: BlkDriver;
  try {
    blk = new BlkDriver({
      ...(path !== undefined ? { path } : {}),
      ...(fd !== undefined ? { fd } : {}),
      ...(o.client === true ? { client: true } : {}),
      blkFile,
      readOnly: o['read-only'] === true,
      queues,
      blockSize,
      ...(serial !== undefined ? { serial } : {}),
      io,
      ...(delay > 0 ? { completionDelayMs: delay } : {}),
      ...(cpus !== undefined ? { cpus } : {}),
      logger,
    });
  } catch (e) {
    // A missing or unusable backing file is the user's to fix: say so plainly.
    const err = e as NodeJS.ErrnoException;
    if (err.code !== undefined || e instanceof RangeError) {
      console.error(`vhost-ts blk: ${err.message}`);
      return 1;
    }
    throw e;
  }

  // Signals first: a SIGTERM during start-up must still release what was set up.
  let stopRequested: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    stopRequested = resolve;
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
  const onHup = (): void => {
    blk.resize().then(
      (r) => logger.info(r.changed ? `SIGHUP: capacity ${r.oldBytes} -> ${r.newBytes} bytes` : `SIGHUP: capacity unchanged (${r.newBytes} bytes)`),
      (e: unknown) => logger.error(`SIGHUP: resize failed: ${(e as Error).message}`),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onHup);

  let view: LiveView | null = null;
  try {
    await blk.start();
    const g = blk.geometry;
    logger.info(
      `blk back-end: ${blkFile}, ${g.capacityBytes} bytes, ${g.blockSize}-byte blocks${g.readOnly ? ', read-only' : ''}, ${queues} queue(s), io ${io}, ${blk.vhost.path}${o.client === true ? ' (client)' : ''}`,
    );
    if (interval > 0) {
      view = new LiveView({
        metrics: METRICS,
        intervalMs: interval * 1000,
        sample: () => sample(blk),
        tags: { command: 'blk' },
      });
      view.start();
    }
    await stopped;
  } finally {
    view?.stop();
    await blk.stop().catch((e: unknown) => logger.error(`stop: ${(e as Error).message}`));
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('SIGHUP', onHup);
  }
  return 0;
}

/** Cumulative per-queue counters: rows `q<i>` (several connections on one socket add up). */
async function sample(blk: BlkDriver): Promise<Sample> {
  const out: Sample = {};
  for (const dev of await blk.stats()) {
    for (const q of dev.queues) {
      const r = (out[`q${q.vring}`] ??= { requests: 0, bytes: 0, depth: 0, errors: 0 });
      r.requests! += q.requests;
      r.bytes! += q.bytesRead + q.bytesWritten;
      r.depth! += q.depth;
      r.errors! += q.errors;
    }
  }
  return out;
}
