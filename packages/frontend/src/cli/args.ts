/**
 * Argument parsing for `vhost-ts frontend`. Pure: returns options or throws a
 * {@link UsageError} (the CLI prints it and exits with code 2).
 */
import type { LayoutKind } from '../memory/layout.js';

export type FrontendMode = 'tx' | 'rx' | 'loop' | 'blk-verify';

export interface FrontendCliOptions {
  socketPath: string;
  server: boolean;
  mode: FrontendMode;
  /** Queue pairs (net) or request queues (blk). */
  queues: number;
  packed: boolean;
  /** Frame bytes (net, without the virtio-net header) or request bytes (blk). */
  size: number;
  seconds: number;
  /** Packets per second per queue; 0 = flat out. */
  rate: number;
  queueSize: number;
  memory: number;
  layout: LayoutKind;
  regions: number;
  burst: number;
  indirect: boolean;
  eventIdx: boolean;
  mrgRxbuf: boolean;
  /** loop: largest number of frames in flight per queue pair (0 = no limit; default = RX ring size). */
  window: number | undefined;
  /** Busy-poll the used rings instead of sleeping on call eventfds. */
  poll: boolean;
  /** Idle polling before sleeping on notifications (µs); undefined = the traffic loop's default. */
  spinUs: number | undefined;
  /** Pin the front-end's thread to these CPUs (sched_setaffinity); empty = leave as is. */
  cpus: number[];
  verify: boolean;
  timeoutMs: number;
  drainMs: number;
  /** blk-verify: queue depth per queue, and sectors covered (0 = derive from capacity). */
  depth: number;
  blkSectors: number;
  /** Output format: 'auto' = progress line on a TTY, JSON lines otherwise. */
  output: 'auto' | 'json' | 'quiet';
  /** Interval between progress reports. */
  intervalMs: number;
  /** Log every control message sent to stderr. */
  trace: boolean;
  /** Net data path in this many worker threads (0 = on the main thread). */
  workers: number;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = 2;
}

export const FRONTEND_USAGE = `usage: vhost-ts frontend --socket-path=PATH --mode=tx|rx|loop|blk-verify [options]

  --socket-path=PATH   vhost-user socket (connect; with --server: listen and accept one back-end)
  --server             listen on PATH instead of connecting
  --mode=MODE          tx: transmit on every TX ring; rx: receive on every RX ring;
                       loop: transmit and check what comes back (echo / DPDK io, macswap);
                       blk-verify: write patterns, read back, compare (virtio-blk back-end)
  --queues=N           queue pairs (net) or request queues (blk)          [1]
  --packed             packed virtqueues (VIRTIO_F_RING_PACKED)
  --size=BYTES         frame size without the virtio-net header (net, >= 38) [64]
                       or request size (blk, multiple of 512)               [4096]
  --seconds=S          traffic duration (fractions allowed)               [5]
  --rate=PPS           packets per second per queue, 0 = flat out        [0]
  --queue-size=N       descriptors per ring (power of two, <= 32768)      [256]
  --memory=BYTES       guest memory (K/M/G suffixes)                      [64M]
  --layout=L           dpdk (gpa == va) | qemu (gpa 0 + 4G, offset) | multi [dpdk]
  --regions=N          memfds for --layout=multi (1..8)                   [2]
  --burst=N            descriptors per batch                              [32]
  --indirect           use indirect descriptors when offered
  --event-idx          negotiate VIRTIO_F_EVENT_IDX when offered
  --no-mrg-rxbuf       do not negotiate VIRTIO_NET_F_MRG_RXBUF
  --window=N           loop: max frames in flight per pair (0 = unlimited) [RX ring size]
  --poll               busy-poll used rings instead of waiting for calls
  --spin-us=N          poll this long without work before sleeping      [200; 0 with --rate]
  --cpu=LIST           pin the front-end thread, e.g. 0 or 0,2-3 (keep it off the back-end's core);
                       with --workers, the workers are pinned round-robin to these CPUs
  --workers=N          net data path in N worker threads, pairs dealt round-robin [0: main thread]
  --no-verify          count frames without checking their content
  --timeout-ms=N       timeout of every reply and of connect/accept     [5000]
  --drain-ms=N         after traffic stops, keep receiving this long      [500]
  --depth=N            blk-verify: requests in flight per queue           [16]
  --blk-sectors=N      blk-verify: sectors to cover (0 = up to 64 MiB of the disk) [0]
  --json | --quiet     JSON lines even on a TTY | only the final summary
  --interval-ms=N      progress interval                                  [1000]
  --trace              log every control message sent (stderr)
Exit codes: 0 ok, 1 run failed (connection, verification), 2 bad arguments.`;

const SUFFIX: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** Parses `64`, `4K`, `64M`, `1G` (binary multiples). */
export function parseBytes(text: string, what: string): number {
  const m = /^(\d+)([kKmMgG]?)(i?[bB])?$/.exec(text);
  if (!m) throw new UsageError(`${what}: expected a byte count like 1500, 4K or 64M, got '${text}'`);
  const v = Number(m[1]) * SUFFIX[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(v)) throw new UsageError(`${what}: ${text} is too large`);
  return v;
}

function parseInt10(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: expected an integer, got '${text}'`);
  const v = Number(text);
  if (v < min || v > max) throw new UsageError(`${what}: ${v} is outside [${min}, ${max}]`);
  return v;
}

const BOOLEAN_FLAGS = new Set(['trace', 'server', 'packed', 'indirect', 'event-idx', 'no-mrg-rxbuf', 'poll', 'no-verify', 'json', 'quiet', 'help']);
const VALUE_FLAGS = new Set([
  'socket-path', 'mode', 'queues', 'size', 'seconds', 'rate', 'queue-size', 'memory', 'layout', 'regions', 'burst',
  'window', 'timeout-ms', 'drain-ms', 'depth', 'blk-sectors', 'interval-ms', 'spin-us', 'cpu', 'workers',
]);

/** Parses a CPU list like `0`, `0,2` or `1-3`. */
export function parseCpuList(text: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--cpu: expected a CPU list like 0 or 0,2-3, got '${text}'`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b > 1023) throw new UsageError(`--cpu: bad range '${part}'`);
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** Parses argv (without the program and sub-command names). `--help` throws a UsageError whose message is the usage. */
export function parseFrontendArgs(argv: readonly string[]): FrontendCliOptions {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (BOOLEAN_FLAGS.has(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags.add(name);
    } else if (VALUE_FLAGS.has(name)) {
      let v: string | undefined;
      if (eq >= 0) v = arg.slice(eq + 1);
      else {
        v = argv[++i];
        if (v === undefined || v.startsWith('--')) throw new UsageError(`--${name} needs a value`);
      }
      if (values.has(name)) throw new UsageError(`--${name} given twice`);
      values.set(name, v);
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  if (flags.has('help')) throw new UsageError(FRONTEND_USAGE);

  const socketPath = values.get('socket-path');
  if (socketPath === undefined || socketPath === '') throw new UsageError('--socket-path=PATH is required');
  if (Buffer.byteLength(socketPath) > 107) throw new UsageError('--socket-path is longer than a unix socket path may be (107 bytes)');
  const modeText = values.get('mode');
  if (modeText === undefined) throw new UsageError('--mode=tx|rx|loop|blk-verify is required');
  if (!['tx', 'rx', 'loop', 'blk-verify'].includes(modeText)) throw new UsageError(`--mode: unknown mode '${modeText}' (tx|rx|loop|blk-verify)`);
  const mode = modeText as FrontendMode;
  const blk = mode === 'blk-verify';

  const layoutText = values.get('layout') ?? 'dpdk';
  if (!['dpdk', 'qemu', 'multi'].includes(layoutText)) throw new UsageError(`--layout: unknown layout '${layoutText}' (dpdk|qemu|multi)`);

  const queueSize = parseInt10(values.get('queue-size') ?? '256', '--queue-size', 2, 32768);
  const packed = flags.has('packed');
  if (!packed && (queueSize & (queueSize - 1)) !== 0) throw new UsageError(`--queue-size: ${queueSize} is not a power of two (split rings need one)`);

  const size = values.has('size') ? parseBytes(values.get('size')!, '--size') : blk ? 4096 : 64;
  if (blk) {
    if (size === 0 || size % 512 !== 0 || size > 4 * 1024 * 1024) throw new UsageError(`--size: blk requests are multiples of 512 up to 4M, got ${size}`);
  } else if (size < 38 || size > 65535) {
    throw new UsageError(`--size: frames are 38..65535 bytes (14 Ethernet + 24 probe header at least), got ${size}`);
  }

  const secondsText = values.get('seconds') ?? '5';
  if (!/^\d+(\.\d+)?$/.test(secondsText)) throw new UsageError(`--seconds: expected a number, got '${secondsText}'`);
  const seconds = Number(secondsText);
  if (seconds <= 0 || seconds > 86400) throw new UsageError(`--seconds: ${seconds} is outside (0, 86400]`);

  const memory = parseBytes(values.get('memory') ?? '64M', '--memory');
  if (memory < 1024 * 1024 || memory % 4096 !== 0) throw new UsageError(`--memory: at least 1M and a multiple of 4K, got ${memory}`);

  const output = flags.has('json') && flags.has('quiet') ? null : flags.has('json') ? 'json' : flags.has('quiet') ? 'quiet' : 'auto';
  if (output === null) throw new UsageError('--json and --quiet exclude each other');

  return {
    socketPath,
    server: flags.has('server'),
    mode,
    queues: parseInt10(values.get('queues') ?? '1', '--queues', 1, 128),
    packed,
    size,
    seconds,
    rate: parseInt10(values.get('rate') ?? '0', '--rate', 0, 1e9),
    queueSize,
    memory,
    layout: layoutText as LayoutKind,
    regions: parseInt10(values.get('regions') ?? '2', '--regions', 1, 8),
    burst: parseInt10(values.get('burst') ?? '32', '--burst', 1, 1024),
    indirect: flags.has('indirect'),
    eventIdx: flags.has('event-idx'),
    mrgRxbuf: !flags.has('no-mrg-rxbuf'),
    window: values.has('window') ? parseInt10(values.get('window')!, '--window', 0, 1 << 20) : undefined,
    poll: flags.has('poll'),
    spinUs: values.has('spin-us') ? parseInt10(values.get('spin-us')!, '--spin-us', 0, 1_000_000) : undefined,
    cpus: values.has('cpu') ? parseCpuList(values.get('cpu')!) : [],
    verify: !flags.has('no-verify'),
    timeoutMs: parseInt10(values.get('timeout-ms') ?? '5000', '--timeout-ms', 1, 3_600_000),
    drainMs: parseInt10(values.get('drain-ms') ?? '500', '--drain-ms', 0, 60_000),
    depth: parseInt10(values.get('depth') ?? '16', '--depth', 1, 1024),
    blkSectors: parseInt10(values.get('blk-sectors') ?? '0', '--blk-sectors', 0, 2 ** 40),
    output,
    intervalMs: parseInt10(values.get('interval-ms') ?? '1000', '--interval-ms', 50, 3_600_000),
    trace: flags.has('trace'),
    workers: parseInt10(values.get('workers') ?? '0', '--workers', 0, 128),
  };
}
