import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Whether a tool can be used: `{ ok: true }` or the reason it cannot (a missing binary, usually). */
export type Availability = { ok: true } | { ok: false; reason: string };

/** Error thrown when waiting for something runs out of time. */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/**
 * Largest unix socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
 */
export const MAX_SOCKET_PATH = 107;

/** Finds an executable on `PATH` (or checks an absolute path); undefined when there is none. */
export function which(binary: string): string | undefined {
  const candidates = binary.includes('/')
    ? [binary]
    : (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin')
        .split(':')
        .filter((d) => d.length > 0)
        .map((d) => path.join(d, binary));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** `{ ok: true }` when every binary is on PATH, otherwise the reason naming the first one missing. */
export function requireBinaries(binaries: ReadonlyArray<{ bin: string; pkg: string }>): Availability {
  for (const { bin, pkg } of binaries) {
    if (which(bin) === undefined) {
      return { ok: false, reason: `${bin} not found on PATH (Debian package ${pkg})` };
    }
  }
  return { ok: true };
}

/**
 * Base directory for temp dirs holding sockets: `/tmp` (not `os.tmpdir()`, which may be long),
 * so that socket paths stay well under 108 bytes.
 */
export function socketBaseDir(): string {
  return existsSync('/tmp') ? '/tmp' : os.tmpdir();
}

/** Creates a fresh private directory under /tmp: `/tmp/vts-<prefix>-XXXXXX`. */
export async function makeTempDir(prefix = 'peer'): Promise<string> {
  return mkdtemp(path.join(socketBaseDir(), `vts-${sanitize(prefix)}-`));
}

/** Synchronous variant of {@link makeTempDir}. */
export function makeTempDirSync(prefix = 'peer'): string {
  return mkdtempSync(path.join(socketBaseDir(), `vts-${sanitize(prefix)}-`));
}

/** Removes a directory tree, ignoring errors (used on cleanup paths). */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

/** Synchronous {@link removeDir}, for `process.on('exit')`. */
export function removeDirSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

/** `dir/name`, checked against the unix socket path limit. */
export function socketPath(dir: string, name: string): string {
  const p = path.join(dir, name);
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new Error(`unix socket path too long (${Buffer.byteLength(p)} > ${MAX_SOCKET_PATH} bytes): ${p}`);
  }
  return p;
}

let uniqueCounter = 0;
/** A short unique token (pid, counter, random): good for DPDK `--file-prefix` and names. */
export function uniqueId(prefix = 'vts'): string {
  uniqueCounter += 1;
  return `${sanitize(prefix)}${process.pid.toString(36)}${uniqueCounter.toString(36)}${Math.floor(Math.random() * 36 ** 4)
    .toString(36)
    .padStart(4, '0')}`;
}

function sanitize(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 24);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface WaitForPathOptions {
  timeoutMs?: number;
  /** Only succeed when the path is a unix socket (default true). */
  socket?: boolean;
  /** Polled alongside: when it returns a string, waiting fails with that message (e.g. "process exited"). */
  abortIf?: () => string | undefined;
  intervalMs?: number;
}

/** Waits for a path (by default: a unix socket) to appear. */
export async function waitForPath(p: string, options: WaitForPathOptions = {}): Promise<void> {
  const { timeoutMs = 10_000, socket = true, intervalMs = 20 } = options;
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const st = await stat(p);
      if (!socket || st.isSocket()) return;
    } catch {
      // not yet
    }
    const why = options.abortIf?.();
    if (why !== undefined) throw new Error(`while waiting for ${p}: ${why}`);
    if (Date.now() >= end) throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${p}`);
    await sleep(intervalMs);
  }
}

/** Sends a signal to a whole process group; ignores a group that is already gone. */
export function killGroup(pgid: number, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** Whether a pid exists (signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether an ELF executable is statically linked (no PT_INTERP program header). */
export function isStaticElf(file: string): boolean {
  const b = readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) {
    throw new Error(`${file}: not a 64-bit little-endian ELF file`);
  }
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) break;
    if (b.readUInt32LE(off) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** The repository root (this file lives in `<repo>/packages/peers/{src,dist}/`). */
export function repoRoot(): string {
  return path.resolve(import.meta.dirname, '../../..');
}

const heldLocks = new Set<string>();
let lockExitHook = false;

/**
 * Takes an exclusive cross-process lock (a directory holding the owner's pid) and returns its
 * release function. A lock whose owner process is gone is broken. Released automatically when
 * this process exits.
 */
export async function acquireLock(lockDir: string, options: { timeoutMs?: number } = {}): Promise<() => Promise<void>> {
  const end = Date.now() + (options.timeoutMs ?? 300_000);
  if (!lockExitHook) {
    lockExitHook = true;
    process.on('exit', () => {
      for (const d of heldLocks) removeDirSync(d);
    });
  }
  for (;;) {
    try {
      await mkdir(lockDir);
      heldLocks.add(lockDir);
      await writeFile(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(await readFile(path.join(lockDir, 'pid'), 'utf8').catch(() => 'NaN'));
      let age = 0;
      try {
        age = Date.now() - (await stat(lockDir)).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      if ((Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) || (Number.isNaN(owner) && age > 10_000)) {
        await rm(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > end) throw new TimeoutError(`timed out waiting for lock ${lockDir} (held by pid ${owner})`);
      await sleep(200);
    }
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    heldLocks.delete(lockDir);
    await rm(lockDir, { recursive: true, force: true });
  };
}

/** Runs `fn` holding {@link acquireLock}. */
export async function withLock<T>(lockDir: string, fn: () => Promise<T>, timeoutMs = 300_000): Promise<T> {
  const release = await acquireLock(lockDir, { timeoutMs });
  try {
    return await fn();
  } finally {
    await release();
  }
}

/** The lock directory shared by every CPU-heavy real-peer test on this machine. */
export const PEER_LOCK_DIR = '/tmp/vhost-ts-peers.lock';

/**
 * Serialises CPU-heavy real-peer tests across test files and processes: busy-polling testpmds
 * and TCG guests on a 2-core machine collapse when two such tests overlap. Hold it for the
 * duration of a test file (acquire in `beforeAll`, release in `afterAll`).
 */
export function acquirePeerLock(timeoutMs = 600_000): Promise<() => Promise<void>> {
  return acquireLock(PEER_LOCK_DIR, { timeoutMs });
}

/**
 * Prepares a path for a listening unix socket: removes a stale socket file (nobody accepts on
 * it: ECONNREFUSED), fails if something is listening or the path is not a socket. DPDK's vhost
 * PMD does not unlink a stale socket and then fails to bind.
 */
export async function removeStaleSocket(p: string): Promise<void> {
  let st;
  try {
    st = await lstat(p);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new Error(`${p} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(p);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${p}: something is already listening on this socket`);
  await unlink(p).catch(() => undefined);
}
