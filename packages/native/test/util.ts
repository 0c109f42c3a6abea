/** Helpers shared by the native tests (not a test file itself). */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { liveMappings, releasedMappings } from '../src/index.js';
import { countResources, eventually } from '../../../test/support/leaks.js';

export { countResources, describeFds, eventually } from '../../../test/support/leaks.js';

setFlagsFromString('--expose-gc');
/** A real `gc()` (full, synchronous marking; munmap still happens in V8's deleter). */
export const gc = runInNewContext('gc') as () => void;
// leaks.ts' eventually() calls globalThis.gc when it exists.
(globalThis as { gc?: () => void }).gc ??= gc;

export const KiB = 1024;
export const MiB = 1024 * KiB;
/** An fd number no process here has open (above any RLIMIT_NOFILE): EBADF. */
export const BAD_FD = 2 ** 31 - 1;

export function fixture(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
}

/**
 * A fixture worker (plain .mjs: workers cannot load .ts) whose messages are
 * queued and whose exit is awaited from the start: Node emits a worker's last
 * messages and its 'exit' in one go, so listeners attached later miss them.
 */
export class TestWorker {
  readonly worker: Worker;
  /** Exit code (rejects on an 'error' event: an uncaught exception in the worker). */
  readonly exited: Promise<number>;
  private readonly queue: unknown[] = [];
  private readonly waiters: Array<(msg: unknown) => void> = [];

  constructor(name: string, workerData?: unknown) {
    this.worker = new Worker(fixture(name), { workerData });
    this.worker.on('message', (msg: unknown) => {
      const waiter = this.waiters.shift();
      if (waiter !== undefined) waiter(msg);
      else this.queue.push(msg);
    });
    this.exited = new Promise<number>((resolve, reject) => {
      this.worker.once('exit', resolve);
      this.worker.once('error', reject);
    });
    this.exited.catch(() => {}); // observed by the tests that await it
  }

  /** The next message, or a rejection after `ms`. */
  next<T = unknown>(ms = 5000): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    return within(new Promise<T>((resolve) => this.waiters.push(resolve as (msg: unknown) => void)), ms, 'worker message');
  }

  /** The exit code, or a rejection after `ms`. */
  exit(ms = 5000): Promise<number> {
    return within(this.exited, ms, 'worker exit');
  }

  post(msg: unknown): void {
    this.worker.postMessage(msg);
  }
}

/** Rejects if `promise` takes longer than `ms` (a hang is a failure, not a stuck run). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the process holds: fds, mappings from our mmap (live + released overlays). */
export interface Held {
  fds: number;
  live: number;
  released: number;
}
export function held(): Held {
  return { fds: countResources().fds, live: liveMappings(), released: releasedMappings() };
}

/** Waits (collecting garbage) until the process holds what it held at `baseline`. */
export async function backTo(baseline: Held, ms = 5000): Promise<Held> {
  await eventually(() => {
    const now = held();
    return now.fds === baseline.fds && now.live === baseline.live && now.released === baseline.released;
  }, ms);
  return held();
}

/** VmRSS of this process in bytes. */
export function rssBytes(): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (m === null) throw new Error('no VmRSS in /proc/self/status');
  return Number(m[1]) * KiB;
}

/** The open-file flags of `fd` (octal `flags:` line of /proc/self/fdinfo). */
export function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (m === null) throw new Error(`no flags for fd ${fd}`);
  return parseInt(m[1] ?? '', 8);
}
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

/** Asserts `fn` throws a native error with this code and syscall; returns it. */
export function nativeError(fn: () => unknown): { code: string; errno: number; syscall: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code: string; errno: number; syscall: string; message: string };
  }
  throw new Error('expected an error');
}
