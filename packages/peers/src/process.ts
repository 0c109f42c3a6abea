import { spawn, type ChildProcess } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { killGroup, removeDirSync, sleep, TimeoutError } from './util.js';

/**
 * Keeps the last `capacity` characters of a stream of text, and counts every character ever
 * written so that callers can ask for "output since position P".
 */
export class OutputRing {
  #chunks: string[] = [];
  #retained = 0;
  #total = 0;

  constructor(readonly capacity = 1 << 20) {}

  /** Characters written since creation (monotonic; a position in the stream). */
  get position(): number {
    return this.#total;
  }

  /** Position of the first character still retained. */
  get start(): number {
    return this.#total - this.#retained;
  }

  push(text: string): void {
    if (text.length === 0) return;
    this.#chunks.push(text);
    this.#retained += text.length;
    this.#total += text.length;
    while (this.#retained > this.capacity && this.#chunks.length > 1) {
      const first = this.#chunks.shift() as string;
      this.#retained -= first.length;
    }
    if (this.#retained > this.capacity) {
      const only = this.#chunks[0] as string;
      this.#chunks[0] = only.slice(only.length - this.capacity);
      this.#retained = this.capacity;
    }
  }

  /** Everything retained. */
  text(): string {
    if (this.#chunks.length > 1) this.#chunks = [this.#chunks.join('')];
    return this.#chunks[0] ?? '';
  }

  /** Text from stream position `pos` on (or from the oldest retained character). */
  since(pos: number): string {
    const all = this.text();
    const from = Math.max(0, pos - this.start);
    return all.slice(from);
  }

  /** The last `n` characters. */
  tail(n = 4000): string {
    const all = this.text();
    return all.slice(Math.max(0, all.length - n));
  }
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcessOptions {
  /** Short name for messages ("testpmd", "qemu"). */
  name: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Keep stdin as a pipe (for interactive programs); otherwise /dev/null. */
  stdin?: boolean;
  /** Ring buffer size in characters (default 1 MiB). */
  ringCapacity?: number;
  /** Directories removed when the process is closed (and at exit of this Node process). */
  cleanupDirs?: string[];
  /** Called with every chunk of output (stdout and stderr), e.g. to tee for debugging. */
  onOutput?: (text: string) => void;
}

/** A match in a process's output, with its absolute stream positions. */
export type OutputMatch = RegExpMatchArray & { start: number; end: number };

export interface WaitForOutputOptions {
  timeoutMs?: number;
  /** Stream position to search from (default: the beginning of the retained output). */
  since?: number;
  /**
   * Which capture to search: `all` (stdout and stderr as they arrived, the default) or `stdout`
   * alone. Positions (`since`, the match's `start`/`end`) are in that capture. Use `stdout` for a
   * prompt a program writes byte by byte (DPDK's cmdline does): a stderr line arriving meanwhile
   * lands in the middle of it in the merged capture ("testp" + error line + "md> ").
   */
  stream?: 'all' | 'stdout';
}

/** Every managed process still alive: killed (SIGKILL to the group) if this Node process exits. */
const live = new Set<ManagedProcess>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const killAll = (): void => {
    for (const p of live) p.killNow();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      // Keep the default behaviour (terminate) when nobody else handles the signal.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

/**
 * A child process in its own process group, with stdout+stderr captured into a ring buffer.
 * `close()` stops it (optionally gracefully first), kills the whole group and removes its
 * temp directories; it is safe to call more than once.
 */
export class ManagedProcess implements AsyncDisposable {
  /** stdout and stderr, interleaved in arrival order. */
  readonly output: OutputRing;
  /** stdout alone (stays in the program's write order whatever stderr does). */
  readonly stdout: OutputRing;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  readonly commandLine: string;
  #exit: ExitStatus | undefined;
  #waiters = new Set<() => void>();
  #cleanupDirs: string[];
  #closing: Promise<ExitStatus> | undefined;

  constructor(
    readonly file: string,
    readonly args: readonly string[],
    readonly options: ManagedProcessOptions,
  ) {
    installExitHooks();
    this.output = new OutputRing(options.ringCapacity);
    this.stdout = new OutputRing(options.ringCapacity);
    this.#cleanupDirs = [...(options.cleanupDirs ?? [])];
    this.commandLine = [file, ...args].map(shellQuote).join(' ');
    this.child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true, // own process group: we kill the group, never a name
    });
    if (this.child.pid === undefined) {
      // spawn failure (ENOENT...) is reported through 'error'; give a synchronous-looking pid
      this.pid = -1;
    } else {
      this.pid = this.child.pid;
      live.add(this);
    }
    const decoders = [new StringDecoder('utf8'), new StringDecoder('utf8')];
    const onData = (i: number) => (buf: Buffer) => {
      const text = (decoders[i] as StringDecoder).write(buf);
      this.output.push(text);
      if (i === 0) this.stdout.push(text);
      options.onOutput?.(text);
      for (const w of [...this.#waiters]) w();
    };
    this.child.stdout?.on('data', onData(0));
    this.child.stderr?.on('data', onData(1));
    // A closed stdin pipe must not crash the test process.
    this.child.stdin?.on('error', () => undefined);
    this.exited = new Promise<ExitStatus>((resolve) => {
      let done = false;
      const finish = (st: ExitStatus): void => {
        if (done) return;
        done = true;
        this.#exit = st;
        live.delete(this);
        for (const w of [...this.#waiters]) w();
        resolve(st);
      };
      this.child.once('error', (err) => {
        this.output.push(`\n[${options.name}: spawn error: ${err.message}]\n`);
        finish({ code: null, signal: null });
      });
      // 'close' waits for stdio to drain as well, so the ring holds the final output.
      this.child.once('close', (code, signal) => finish({ code, signal }));
    });
  }

  /** Exit status, once the process has exited. */
  get exitStatus(): ExitStatus | undefined {
    return this.#exit;
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  /** Writes to stdin (interactive programs). */
  write(text: string): void {
    const stdin = this.child.stdin;
    if (stdin === null || stdin.destroyed || !stdin.writable) {
      throw new Error(`${this.options.name}: stdin is not writable${this.#exit ? ' (process exited)' : ''}`);
    }
    stdin.write(text);
  }

  /** Registers another directory to remove on close. */
  addCleanupDir(dir: string): void {
    this.#cleanupDirs.push(dir);
  }

  /** Describes the process and the end of its output, for error messages. */
  describe(tailChars = 3000): string {
    const st = this.#exit
      ? `exited (code ${this.#exit.code}, signal ${this.#exit.signal})`
      : `running (pid ${this.pid})`;
    return `${this.options.name} ${st}\n$ ${this.commandLine}\n--- last output ---\n${this.output.tail(tailChars)}\n--- end ---`;
  }

  /**
   * Waits until the output since `options.since` matches `pattern`. Rejects on timeout or
   * when the process exits first, with the end of the output in the message.
   */
  waitForOutput(pattern: RegExp | string, options: WaitForOutputOptions = {}): Promise<OutputMatch> {
    const ring = options.stream === 'stdout' ? this.stdout : this.output;
    const { timeoutMs = 10_000, since = ring.start } = options;
    const re = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern)) : pattern;
    const where = options.stream === 'stdout' ? ' on stdout' : '';
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const from = Math.max(since, ring.start);
        const m = ring.since(since).match(re);
        if (m !== null) {
          cleanup();
          const start = from + (m.index ?? 0);
          resolve(Object.assign(m, { start, end: start + m[0].length }));
          return true;
        }
        if (this.#exit !== undefined) {
          cleanup();
          reject(new Error(`${this.options.name} exited before printing ${re}${where}\n${this.describe()}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new TimeoutError(`${this.options.name}: no ${re}${where} within ${timeoutMs} ms\n${this.describe()}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      const waiter = (): void => {
        check();
      };
      this.#waiters.add(waiter);
      check();
    });
  }

  /** Waits for exit; rejects with a TimeoutError (the process keeps running) after `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<ExitStatus> {
    if (this.#exit) return this.#exit;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError(`${this.options.name} did not exit within ${timeoutMs} ms\n${this.describe()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a signal to the process group (no-op once exited). */
  signal(sig: NodeJS.Signals): void {
    if (this.pid > 0 && this.#exit === undefined) killGroup(this.pid, sig);
  }

  /** Synchronous last resort: SIGKILL to the group and remove the temp dirs. */
  killNow(): void {
    if (this.pid > 0) killGroup(this.pid, 'SIGKILL');
    for (const d of this.#cleanupDirs) removeDirSync(d);
  }

  /**
   * Stops the process: runs `graceful` (e.g. types `quit`) and waits `graceMs` for exit, then
   * SIGTERM to the group, then SIGKILL after `termMs`. Always kills what is left of the group
   * and removes the cleanup directories. Idempotent.
   */
  close(options: { graceful?: () => void | Promise<void>; graceMs?: number; termMs?: number } = {}): Promise<ExitStatus> {
    this.#closing ??= this.#close(options);
    return this.#closing;
  }

  async #close(options: { graceful?: () => void | Promise<void>; graceMs?: number; termMs?: number }): Promise<ExitStatus> {
    const { graceful, graceMs = 3000, termMs = 2000 } = options;
    try {
      if (this.#exit === undefined && graceful !== undefined) {
        try {
          await graceful();
          await this.waitForExit(graceMs);
        } catch {
          // fall through to signals
        }
      }
      if (this.#exit === undefined) {
        this.signal('SIGTERM');
        try {
          await this.waitForExit(termMs);
        } catch {
          // fall through
        }
      }
      if (this.#exit === undefined) {
        this.signal('SIGKILL');
        await this.waitForExit(5000).catch(() => undefined);
      }
      // Children of the leader (if any) go too.
      if (this.pid > 0) killGroup(this.pid, 'SIGKILL');
      this.child.stdin?.destroy();
    } finally {
      live.delete(this);
      for (const d of this.#cleanupDirs) removeDirSync(d);
    }
    return this.#exit ?? { code: null, signal: null };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Races a promise against a timeout. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`${what}: timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export { sleep };
