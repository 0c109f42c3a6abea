import os from 'node:os';
import path from 'node:path';
import { ManagedProcess, escapeRegExp, type ExitStatus, type OutputMatch } from './process.js';
import {
  makeTempDir,
  removeDir,
  removeStaleSocket,
  requireBinaries,
  sleep,
  socketPath as checkedSocketPath,
  TimeoutError,
  uniqueId,
  waitForPath,
  which,
  type Availability,
} from './util.js';

/** testpmd forwarding modes we use (testpmd knows more; any string is passed through). */
export type ForwardMode = 'io' | 'rxonly' | 'txonly' | 'macswap' | 'icmpecho' | 'mac' | 'flowgen' | '5tswap' | (string & {});

/** Which side of the vhost-user socket testpmd plays. */
export type TestpmdRole =
  /** `net_virtio_user`: a vhost-user front-end (driver side), like a VM. */
  | 'frontend'
  /** `net_vhost`: DPDK's vhost-user back-end (the reference device side). */
  | 'backend';

export interface TestpmdOptions {
  role: TestpmdRole;
  /** The vhost-user socket. Default: `vhost.sock` in the process's own temp dir under /tmp. */
  socketPath?: string;
  /** Queue pairs on the vdev and `--rxq/--txq` (default 1). */
  queues?: number;
  /** Front-end only: listen on the socket (`server=1`) instead of connecting. */
  server?: boolean;
  /** Back-end only: connect to the socket (`client=1`) instead of listening. */
  client?: boolean;
  /** Front-end only: packed virtqueues (`packed_vq=1`). */
  packedVq?: boolean;
  /** Front-end only: `mrg_rxbuf=0|1` (DPDK's default is on). */
  mrgRxbuf?: boolean;
  /** Front-end only: `in_order=1`. */
  inOrder?: boolean;
  /** Front-end only: `queue_size=N` (ring size, default 256). */
  queueSize?: number;
  /** Front-end only: `mac=` of the virtio-user port. */
  mac?: string;
  /** Extra `key=value` vdev arguments. */
  vdevExtra?: string[];
  /** Forwarding mode (default `io`). */
  forwardMode?: ForwardMode;
  /** `--txpkts`: packet length, or segment lengths (txonly / tx_first). */
  txpkts?: number | number[];
  /** `--burst`. */
  burst?: number;
  /** `--max-pkt-len` (e.g. 9018 for 9000-byte frames). */
  maxPktLen?: number;
  /** `--mbuf-size` (data room per mbuf; e.g. 10240 for 9000-byte frames in one mbuf). */
  mbufSize?: number;
  /** `--total-num-mbufs` (default 32768: the pool fails with fewer on `--no-huge`). */
  totalNumMbufs?: number;
  /** `--rxd` / `--txd`. */
  rxd?: number;
  txd?: number;
  /** EAL `-m` in MiB with `--no-huge` (default 512). */
  memoryMiB?: number;
  /**
   * CPU pinning for the two lcores (main, forwarding). Default: back-end forwards on CPU 1 and
   * front-end on CPU 0 (`--lcores 0@0,1@1` / `0@1,1@0`), so a pair of testpmds never time-slices
   * one core. Ignored when `lcores` is given.
   */
  cpus?: { main: number; forward: number };
  /** Raw `--lcores` value. */
  lcores?: string;
  /** `--nb-cores` (forwarding cores; default 1). */
  nbCores?: number;
  /** Start forwarding at init (`--auto-start`, default true). */
  autoStart?: boolean;
  /** `--log-level` values, e.g. `lib.vhost.config:debug`. */
  logLevels?: string[];
  /** Extra EAL arguments (before `--`) and testpmd arguments (after `--`). */
  extraEal?: string[];
  extraApp?: string[];
  /** Timeout for start-up (prompt, socket) in ms (default 20 s). */
  readyTimeoutMs?: number;
  /**
   * Front-end in server mode only: how long the prompt may take to come up after `start()`
   * returned, i.e. how long testpmd may wait for the back-end to connect (default 60 s).
   */
  connectTimeoutMs?: number;
  /** Front-end client mode: wait for the socket to exist before starting (default true). */
  waitForSocket?: boolean;
  /** Executable (default `dpdk-testpmd`). */
  binary?: string;
  /** Name in messages (default `testpmd-<role>`). */
  name?: string;
  /** Copy output to this callback too (debugging). */
  onOutput?: (text: string) => void;
}

/** Per-port counters from `show port stats all`. */
export interface PortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  /** Throughput since the previous `show port stats` (0 on the first call). */
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
}

/** Per-port counters from the forward statistics printed by `stop` (and `quit` while forwarding). */
export interface ForwardPortStats {
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
}

export interface ForwardStats {
  ports: Map<number, ForwardPortStats>;
  /** The "Accumulated forward statistics for all ports" block. */
  total: ForwardPortStats;
}

/** Counter deltas and rates over a measured interval (see `Testpmd.measureRate`). */
export interface RateSample {
  seconds: number;
  rxPackets: number;
  txPackets: number;
  rxPps: number;
  txPps: number;
  /** Bytes as counted by the PMD (no preamble/IFG) × 8 per second. */
  rxBitsPerSecond: number;
  txBitsPerSecond: number;
}

export const TESTPMD_PROMPT = 'testpmd> ';

/**
 * Lets stderr catch up with stdout. What testpmd wrote to stderr before a prompt is already in
 * the stderr pipe when the prompt arrives on stdout, but the two pipes are read separately: give
 * the event loop a few milliseconds to read it, so that it lands before the prompt's position in
 * the merged output (in the answer it belongs to, not in the next command's).
 */
function stderrCatchUp(): Promise<void> {
  return sleep(5);
}

/** `{ ok: true }` when `dpdk-testpmd` (Debian `dpdk-dev`) is installed. */
export function isTestpmdAvailable(binary = 'dpdk-testpmd'): Availability {
  return requireBinaries([{ bin: binary, pkg: 'dpdk-dev' }]);
}

/** The `--vdev` argument for the options. */
export function testpmdVdev(opts: TestpmdOptions & { socketPath: string }): string {
  const q = opts.queues ?? 1;
  const parts: string[] = [];
  if (opts.role === 'frontend') {
    parts.push('net_virtio_user0', `path=${opts.socketPath}`, `queues=${q}`);
    if (opts.server === true) parts.push('server=1');
    if (opts.packedVq === true) parts.push('packed_vq=1');
    if (opts.mrgRxbuf !== undefined) parts.push(`mrg_rxbuf=${opts.mrgRxbuf ? 1 : 0}`);
    if (opts.inOrder === true) parts.push('in_order=1');
    if (opts.queueSize !== undefined) parts.push(`queue_size=${opts.queueSize}`);
    if (opts.mac !== undefined) parts.push(`mac=${opts.mac}`);
  } else {
    if (opts.server === true || opts.packedVq !== undefined || opts.mrgRxbuf !== undefined || opts.inOrder !== undefined) {
      throw new Error('server/packedVq/mrgRxbuf/inOrder are front-end (net_virtio_user) options');
    }
    parts.push('net_vhost0', `iface=${opts.socketPath}`, `queues=${q}`);
    if (opts.client === true) parts.push('client=1');
  }
  if (opts.role === 'frontend' && opts.client !== undefined) {
    throw new Error('client is a back-end (net_vhost) option; a front-end uses server');
  }
  parts.push(...(opts.vdevExtra ?? []));
  return parts.join(',');
}

/** The default lcore pinning for a role: two lcores, forwarding core on a different CPU per role. */
export function defaultLcores(role: TestpmdRole): string {
  const ncpu = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  if (ncpu < 2) return '0@0,1@0';
  return role === 'backend' ? '0@0,1@1' : '0@1,1@0';
}

/** Full argument vector (without the binary) for the options; `filePrefix` must be unique. */
export function testpmdArgs(opts: TestpmdOptions & { socketPath: string }, filePrefix: string): string[] {
  const q = opts.queues ?? 1;
  const lcores = opts.lcores ?? (opts.cpus ? `0@${opts.cpus.main},1@${opts.cpus.forward}` : defaultLcores(opts.role));
  const eal = [
    '--no-pci',
    '--no-huge',
    '-m',
    String(opts.memoryMiB ?? 512),
    `--file-prefix=${filePrefix}`,
    '--lcores',
    lcores,
    '--vdev',
    testpmdVdev(opts),
    ...(opts.logLevels ?? []).map((l) => `--log-level=${l}`),
    ...(opts.extraEal ?? []),
  ];
  const app = [
    '-i',
    ...(opts.autoStart === false ? [] : ['--auto-start']),
    `--forward-mode=${opts.forwardMode ?? 'io'}`,
    `--total-num-mbufs=${opts.totalNumMbufs ?? 32768}`,
    `--rxq=${q}`,
    `--txq=${q}`,
    `--nb-cores=${opts.nbCores ?? 1}`,
  ];
  // Order matters: testpmd checks --txpkts against the mbuf size parsed *before* it (and only
  // warns "give up", keeping 64-byte packets), so the sizes come first.
  if (opts.maxPktLen !== undefined) app.push(`--max-pkt-len=${opts.maxPktLen}`);
  if (opts.mbufSize !== undefined) app.push(`--mbuf-size=${opts.mbufSize}`);
  if (opts.txpkts !== undefined) {
    app.push(`--txpkts=${Array.isArray(opts.txpkts) ? opts.txpkts.join(',') : opts.txpkts}`);
  }
  if (opts.burst !== undefined) app.push(`--burst=${opts.burst}`);
  if (opts.rxd !== undefined) app.push(`--rxd=${opts.rxd}`);
  if (opts.txd !== undefined) app.push(`--txd=${opts.txd}`);
  app.push(...(opts.extraApp ?? []));
  return [...eal, '--', ...app];
}

const NUM = '(\\d+)';

function num(block: string, label: string): number {
  const m = block.match(new RegExp(`${escapeRegExp(label)}:\\s*${NUM}`));
  return m ? Number(m[1]) : 0;
}

/**
 * Parses every "NIC statistics for port N" block in `text` (output of `show port stats all`);
 * when a port appears more than once, the last block wins.
 */
export function parsePortStats(text: string): PortStats[] {
  const byPort = new Map<number, PortStats>();
  const re = /#+ NIC statistics for port (\d+)\s+#+\s*\n([\s\S]*?)\n\s*#{20,}/g;
  for (const m of text.matchAll(re)) {
    const port = Number(m[1]);
    const b = m[2] ?? '';
    byPort.set(port, {
      port,
      rxPackets: num(b, 'RX-packets'),
      rxMissed: num(b, 'RX-missed'),
      rxBytes: num(b, 'RX-bytes'),
      rxErrors: num(b, 'RX-errors'),
      rxNombuf: num(b, 'RX-nombuf'),
      txPackets: num(b, 'TX-packets'),
      txErrors: num(b, 'TX-errors'),
      txBytes: num(b, 'TX-bytes'),
      rxPps: num(b, 'Rx-pps'),
      rxBps: num(b, 'Rx-bps'),
      txPps: num(b, 'Tx-pps'),
      txBps: num(b, 'Tx-bps'),
    });
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

function forwardBlock(b: string): ForwardPortStats {
  return {
    rxPackets: num(b, 'RX-packets'),
    rxDropped: num(b, 'RX-dropped'),
    rxTotal: num(b, 'RX-total'),
    txPackets: num(b, 'TX-packets'),
    txDropped: num(b, 'TX-dropped'),
    txTotal: num(b, 'TX-total'),
  };
}

/**
 * Parses the last forward statistics report in `text` (printed by `stop`, or by `quit` while
 * forwarding): per-port blocks and the accumulated block. Undefined when there is none.
 */
export function parseForwardStats(text: string): ForwardStats | undefined {
  const accRe = /\+{3,} Accumulated forward statistics for all ports\s*\+{3,}\s*\n([\s\S]*?)\n\s*\+{20,}/g;
  const accs = [...text.matchAll(accRe)];
  const last = accs[accs.length - 1];
  if (last === undefined || last.index === undefined) return undefined;
  // The per-port blocks of this report sit between the previous report (if any) and this one.
  const prev = accs[accs.length - 2];
  const from = prev?.index !== undefined ? prev.index + prev[0].length : 0;
  const region = text.slice(from, last.index);
  const ports = new Map<number, ForwardPortStats>();
  const portRe = /-{3,} Forward statistics for port (\d+)\s*-{3,}\s*\n([\s\S]*?)\n\s*-{20,}/g;
  for (const m of region.matchAll(portRe)) ports.set(Number(m[1]), forwardBlock(m[2] ?? ''));
  return { ports, total: forwardBlock(last[1] ?? '') };
}

/** A running `dpdk-testpmd` in interactive mode (commands on stdin). */
export class Testpmd implements AsyncDisposable {
  readonly proc: ManagedProcess;
  readonly socketPath: string;
  readonly filePrefix: string;
  readonly tempDir: string;
  readonly options: TestpmdOptions;
  /** Serialises commands: testpmd's command line is one conversation. */
  #queue: Promise<unknown> = Promise.resolve();
  #ready: Promise<void> = Promise.resolve();
  #promptSeen = false;

  private constructor(proc: ManagedProcess, options: TestpmdOptions, socketPath: string, filePrefix: string, tempDir: string) {
    this.proc = proc;
    this.options = options;
    this.socketPath = socketPath;
    this.filePrefix = filePrefix;
    this.tempDir = tempDir;
  }

  /**
   * Starts testpmd and waits until its prompt is up (and, for a listening socket, until the
   * socket exists). A front-end in server mode returns as soon as its socket exists (its prompt
   * only comes once a back-end connects; commands wait for it, see `waitUntilReady`). On
   * failure the process is killed and the error carries its output.
   */
  static async start(options: TestpmdOptions): Promise<Testpmd> {
    const avail = isTestpmdAvailable(options.binary);
    if (!avail.ok) throw new Error(avail.reason);
    const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
    const tempDir = await makeTempDir(`testpmd-${options.role}`);
    const sock = options.socketPath ?? checkedSocketPath(tempDir, 'vhost.sock');
    const connects = (options.role === 'frontend' && options.server !== true) || (options.role === 'backend' && options.client === true);
    const listens = !connects;
    const filePrefix = uniqueId('tp');
    let args: string[];
    try {
      args = testpmdArgs({ ...options, socketPath: sock }, filePrefix); // validates the options
      if (connects && options.waitForSocket !== false) {
        await waitForPath(sock, { timeoutMs: readyTimeoutMs });
      }
      if (listens) await removeStaleSocket(sock);
    } catch (e) {
      await removeDir(tempDir);
      throw e;
    }
    const binary = options.binary ?? 'dpdk-testpmd';
    // testpmd prints through stdio: on a pipe that is block-buffered and command output would
    // arrive after the next prompt. stdbuf (coreutils) makes it line-buffered.
    const stdbuf = which('stdbuf');
    const [file, argv] = stdbuf !== undefined ? [stdbuf, ['-oL', '-eL', binary, ...args]] : [binary, args];
    const proc = new ManagedProcess(file, argv, {
      name: options.name ?? `testpmd-${options.role}`,
      stdin: true,
      cleanupDirs: [tempDir, ...dpdkRuntimeDirs(filePrefix)],
      ...(options.onOutput ? { onOutput: options.onOutput } : {}),
    });
    const tp = new Testpmd(proc, options, sock, filePrefix, tempDir);
    const promptUp = async (timeoutMs: number): Promise<void> => {
      // On stdout alone: cmdline writes the prompt a byte at a time, and a stderr line such as
      // "Error during enabling promiscuous mode ... - ignore" can land inside it.
      await proc.waitForOutput(TESTPMD_PROMPT, { timeoutMs, stream: 'stdout' });
      await stderrCatchUp();
      tp.#promptSeen = true;
      // Settings testpmd rejects with a warning but runs without: fail instead of measuring
      // something else than asked.
      const rejected = proc.output.text().match(/^.*(?:- give up|Invalid|invalid).*$/m);
      if (rejected !== null) throw new Error(`testpmd rejected an option: ${rejected[0].trim()}\n${proc.describe()}`);
    };
    try {
      if (options.role === 'frontend' && options.server === true) {
        // virtio-user in server mode blocks in device init until a back-end connects: the
        // prompt only comes then. Ready to be dialled = the socket exists.
        await waitForPath(sock, {
          timeoutMs: readyTimeoutMs,
          abortIf: () => (proc.running ? undefined : `testpmd exited\n${proc.describe()}`),
        });
        tp.#ready = promptUp(options.connectTimeoutMs ?? 60_000);
        tp.#ready.catch(() => undefined); // reported by the first command / waitUntilReady()
      } else {
        await promptUp(readyTimeoutMs);
        if (listens) {
          await waitForPath(sock, {
            timeoutMs: readyTimeoutMs,
            abortIf: () => (proc.running ? undefined : `testpmd exited\n${proc.describe()}`),
          });
        }
      }
    } catch (e) {
      await tp.close();
      throw e;
    }
    return tp;
  }

  /**
   * Resolves when testpmd's prompt is up. Always at once, except for a front-end in server mode:
   * there it waits for the back-end to connect (bounded by `connectTimeoutMs`).
   */
  waitUntilReady(): Promise<void> {
    return this.#ready;
  }

  /** Everything testpmd printed (the retained part of it). */
  get output(): string {
    return this.proc.output.text();
  }

  get running(): boolean {
    return this.proc.running;
  }

  /**
   * Sends one command and returns what testpmd printed in answer, up to and including the next
   * prompt. With `until`, that pattern must appear first (e.g. the end of a statistics block),
   * then the prompt after it: the conversation stays in step even when the answer's last lines
   * arrive after a match. Commands are serialised.
   */
  command(cmd: string, options: { timeoutMs?: number; until?: RegExp | string } = {}): Promise<string> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const run = async (): Promise<string> => {
      const since = this.proc.output.position;
      const stdoutSince = this.proc.stdout.position;
      this.proc.write(`${cmd}\n`);
      let end: number | undefined;
      if (options.until !== undefined) {
        // Searched in both streams ("Packet forwarding not started" goes to stderr).
        end = (await this.proc.waitForOutput(options.until, { timeoutMs, since })).end;
      }
      // The first prompt on stdout after the command was typed comes after everything the command
      // printed there (cmdline prints it once the command returns). Looked for on stdout alone:
      // see start().
      await this.proc.waitForOutput(TESTPMD_PROMPT, { timeoutMs, since: stdoutSince, stream: 'stdout' });
      await stderrCatchUp();
      end = Math.max(end ?? 0, this.proc.output.position);
      const text = this.proc.output.since(since);
      return text.slice(0, Math.max(0, end - Math.max(since, this.proc.output.start)));
    };
    const p = this.#queue.then(
      () => this.#ready.then(run),
      () => this.#ready.then(run),
    );
    this.#queue = p.catch(() => undefined);
    return p;
  }

  /** The MAC address testpmd printed for a port at start-up ("Port 0: 56:48:4F:53:54:00"), lower case. */
  macAddress(port = 0): string | undefined {
    const m = this.output.match(new RegExp(`Port ${port}: ((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})`));
    return m?.[1]?.toLowerCase();
  }

  /** `show port stats all`, parsed. */
  async portStats(timeoutMs = 10_000): Promise<PortStats[]> {
    const text = await this.command('show port stats all', { timeoutMs });
    const stats = parsePortStats(text);
    if (stats.length === 0) throw new Error(`no port statistics in testpmd's answer:\n${text}`);
    return stats;
  }

  /** `show port stats all` for one port (default 0). */
  async portStat(port = 0, timeoutMs = 10_000): Promise<PortStats> {
    const s = (await this.portStats(timeoutMs)).find((p) => p.port === port);
    if (s === undefined) throw new Error(`no statistics for port ${port}`);
    return s;
  }

  /**
   * Packet rates of a port over `durationMs`, from two `show port stats all` samples (counter
   * deltas over wall-clock time between the answers).
   */
  async measureRate(durationMs: number, port = 0): Promise<RateSample> {
    const a = await this.portStat(port);
    const t0 = performance.now();
    await sleep(durationMs);
    const b = await this.portStat(port);
    const seconds = (performance.now() - t0) / 1000;
    return {
      seconds,
      rxPackets: b.rxPackets - a.rxPackets,
      txPackets: b.txPackets - a.txPackets,
      rxPps: (b.rxPackets - a.rxPackets) / seconds,
      txPps: (b.txPackets - a.txPackets) / seconds,
      rxBitsPerSecond: ((b.rxBytes - a.rxBytes) * 8) / seconds,
      txBitsPerSecond: ((b.txBytes - a.txBytes) * 8) / seconds,
    };
  }

  /** `start` (or `start tx_first N`: seeds the io loop with N bursts). */
  async start(txFirst?: number): Promise<void> {
    await this.command(txFirst === undefined ? 'start' : `start tx_first ${txFirst}`);
  }

  /** `stop`: stops forwarding and returns the forward statistics it prints. */
  async stop(timeoutMs = 10_000): Promise<ForwardStats> {
    const text = await this.command('stop', {
      timeoutMs,
      until: /Accumulated forward statistics[^\n]*\n[\s\S]*?\n\s*\+{20,}[^\n]*\n|Packet forwarding not started/,
    });
    const fs = parseForwardStats(text);
    if (fs === undefined) throw new Error(`testpmd: forwarding was not started\n${text}`);
    return fs;
  }

  /** `set fwd MODE`. */
  async setForwardMode(mode: ForwardMode): Promise<void> {
    await this.command(`set fwd ${mode}`);
  }

  /** Link status of a port from `show port info N`. */
  async linkUp(port = 0): Promise<boolean> {
    const text = await this.command(`show port info ${port}`);
    return /Link status:\s*up/i.test(text);
  }

  /** Polls `show port info` until the link is up. */
  async waitForLinkUp(port = 0, timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!(await this.linkUp(port))) {
      if (Date.now() > end) throw new TimeoutError(`testpmd port ${port} link not up within ${timeoutMs} ms\n${this.proc.describe()}`);
      await sleep(100);
    }
  }

  /** Waits for `pattern` in the output printed from now on (or from `since`). */
  waitForOutput(pattern: RegExp | string, options: { timeoutMs?: number; since?: number } = {}): Promise<OutputMatch> {
    return this.proc.waitForOutput(pattern, { since: this.proc.output.position, ...options });
  }

  /** The forward statistics of the last report printed (by `stop` or `quit`). */
  lastForwardStats(): ForwardStats | undefined {
    return parseForwardStats(this.output);
  }

  /** `quit` and wait for exit (testpmd prints final statistics if it was forwarding). */
  async quit(timeoutMs = 10_000): Promise<ExitStatus> {
    if (this.proc.running) this.proc.write('quit\n');
    return this.proc.waitForExit(timeoutMs);
  }

  /** Kills testpmd without a goodbye (SIGKILL to the group), e.g. to test a peer dying. */
  async kill(): Promise<ExitStatus> {
    this.proc.signal('SIGKILL');
    return this.proc.exited;
  }

  /**
   * Stops testpmd: `quit` with a short grace period, then SIGTERM/SIGKILL to the process group;
   * removes the temp dir and DPDK's runtime dir. Idempotent.
   */
  async close(): Promise<ExitStatus> {
    // `quit` only works at the prompt (a server-mode front-end still waiting for its back-end
    // has none): otherwise go straight to signals.
    return this.proc.close({
      ...(this.#promptSeen
        ? {
            graceful: () => {
              if (this.proc.running) this.proc.write('quit\n');
            },
          }
        : {}),
      graceMs: 5000,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts testpmd; same as `Testpmd.start`. */
export function startTestpmd(options: TestpmdOptions): Promise<Testpmd> {
  return Testpmd.start(options);
}

/** Where EAL keeps its runtime files for a file prefix (root and non-root locations). */
export function dpdkRuntimeDirs(filePrefix: string): string[] {
  const dirs = [path.join('/var/run/dpdk', filePrefix)];
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg !== undefined && xdg.length > 0) dirs.push(path.join(xdg, 'dpdk', filePrefix));
  dirs.push(path.join('/tmp/dpdk', filePrefix));
  return dirs;
}
