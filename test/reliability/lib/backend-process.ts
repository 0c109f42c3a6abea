/**
 * A vhost-ts back-end in a child process (fixtures/backend.mjs): its crash is
 * observable (the process exits), its resources are read through
 * /proc/<pid> plus its native counters over IPC, and it can be SIGTERMed.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { snapshot, type NativeCounts, type ResourceSnapshot } from '../../support/leaks.js';

/** Where the fixtures live (works from src via vitest and from the compiled dist/). */
export function fixturePath(name: string): string {
  const here = import.meta.dirname;
  // src: test/reliability/lib; dist: test/reliability/dist/reliability/lib
  const root = here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, '../../..') : path.resolve(here, '..');
  return path.join(root, 'fixtures', name);
}

/** One VhostUserDriver of the child (see fixtures/backend.mjs). */
export interface DriverConfig {
  name: string;
  /** Socket file name inside the back-end's temp dir (default `<name>.sock`). */
  socket?: string;
  /** workers module name (sink, loopback, fail, slow) or an absolute path to a compiled module. */
  module?: string;
  moduleOptions?: Record<string, string>;
  queuesPerWorker?: number;
  maxQueues?: number;
  queueNum?: number;
  /** Virtio feature bits offered on top of DEFAULT_FEATURES (bit 30, LOG_ALL). */
  features?: number[];
  ackTimeoutMs?: number;
  callbackTimeoutMs?: number;
  inflight?: boolean;
  /** VhostUserDriverOptions.requireSealedMemory: refuse memory fds that cannot be sealed against shrinking. */
  requireSealedMemory?: boolean;
  /** Offer an (all-zero) config space (enables the CONFIG protocol feature). */
  config?: boolean;
  spinUs?: number;
}

export interface BackendOptions {
  drivers: DriverConfig[];
  /** Lines of log tail the child keeps (default 300). */
  logLines?: number;
  /** Echo the child's stderr (default: only when VHOST_TS_TEST_LOG=1). */
  echo?: boolean;
  /** Run the child with this RLIMIT_NOFILE (soft and hard), to exhaust its fds. */
  fdLimit?: number;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Log summary the child keeps. */
export interface ChildLogs {
  counts: { debug: number; info: number; warn: number; error: number };
  /** Lines saying "internal error" (an exception a handler did not expect: a bug). */
  internal: number;
  /** The last 20 internal-error lines, each with the preceding lines of its connection. */
  internalLines: string[];
  /** "device ready" lines (devices that reached newDevice). */
  ready: number;
  tail: string[];
}

export class BackendProcess {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly sockets: Record<string, string>;
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | null = null;
  private stderrTail: string[] = [];
  private stdoutLines: string[] = [];
  private seq = 0;
  private readonly pending = new Map<number, Pending>();

  private constructor(child: ChildProcess, dir: string, sockets: Record<string, string>, echo: boolean) {
    this.child = child;
    this.dir = dir;
    this.sockets = sockets;
    this.exited = new Promise((resolve) => {
      // 'close' (not 'exit'): stdio is drained by then, so the stderr of a crash is complete.
      child.once('close', (code, signal) => {
        this.exitInfo = { code, signal };
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(new Error(`back-end exited (code ${code}, signal ${signal}) while a request was pending; stderr:\n${this.stderr()}`));
        }
        this.pending.clear();
        resolve({ code, signal });
      });
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      if (echo) process.stderr.write(d);
      for (const l of d.split('\n')) if (l.length > 0) this.stderrTail.push(l);
      if (this.stderrTail.length > 200) this.stderrTail.splice(0, this.stderrTail.length - 200);
    });
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      for (const l of d.split('\n')) if (l.length > 0) this.stdoutLines.push(l);
    });
    child.on('message', (m: { id?: number; ok?: boolean; result?: unknown; error?: string }) => {
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.ok === true) p.resolve(m.result);
      else p.reject(new Error(m.error ?? 'request failed'));
    });
  }

  /** Forks the back-end and waits until every socket listens. */
  static async start(options: BackendOptions): Promise<BackendProcess> {
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-rel-'));
    const sockets: Record<string, string> = {};
    const drivers = options.drivers.map((d) => {
      const p = path.join(dir, d.socket ?? `${d.name}.sock`);
      sockets[d.name] = p;
      const { socket: _s, ...rest } = d;
      return { ...rest, path: p };
    });
    const args = [JSON.stringify({ drivers, logLines: options.logLines ?? 300 })];
    const env = { ...process.env, VHOST_TS_LOG: 'debug' };
    const child =
      options.fdLimit === undefined
        ? fork(fixturePath('backend.mjs'), args, { execArgv: ['--expose-gc'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env })
        : // The shell sets the limit, then execs node with the IPC channel fd and env (NODE_CHANNEL_FD) as they are.
          spawn('/bin/sh', ['-c', `ulimit -n ${options.fdLimit} && exec "$0" "$@"`, process.execPath, '--expose-gc', fixturePath('backend.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env });
    const bp = new BackendProcess(child, dir, sockets, options.echo ?? process.env.VHOST_TS_TEST_LOG === '1');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`back-end did not start within 15 s; stderr:\n${bp.stderr()}`)), 15_000);
      child.on('message', (m: { event?: string }) => {
        if (m.event === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
      void bp.exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`back-end exited during start-up (${JSON.stringify(e)}); stderr:\n${bp.stderr()}`));
      });
    });
    return bp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.exitInfo === null;
  }

  /** The last stderr lines of the child. */
  stderr(): string {
    return this.stderrTail.join('\n');
  }

  /** stdout lines of the child (the SIGTERM report). */
  stdout(): string[] {
    return this.stdoutLines.slice();
  }

  /** One IPC request (see fixtures/backend.mjs). */
  request<T>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
    if (!this.alive) return Promise.reject(new Error(`back-end is dead (${JSON.stringify(this.exitInfo)}); stderr:\n${this.stderr()}`));
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`back-end did not answer ${cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.send({ id, cmd, ...args });
    });
  }

  /** The child's native mapping counters (after GC rounds by default). */
  nativeCounts(gc = true): Promise<NativeCounts> {
    return this.request<NativeCounts>('native', { gc });
  }

  /** A resource snapshot of the child (GC first, so released mappings are unmapped). */
  async snapshot(): Promise<ResourceSnapshot> {
    const n = await this.nativeCounts(true);
    return snapshot({ pid: this.pid, native: n });
  }

  logs(): Promise<ChildLogs> {
    return this.request<ChildLogs>('logs');
  }

  /** Running queue-worker devices in the child (manager.list()). */
  workerDevices(): Promise<number> {
    return this.request<number>('workers');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; removes the temp dir. Resolves with the exit info. */
  async stop(graceMs = 5000): Promise<ExitInfo> {
    if (this.alive) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
    return this.exitInfo!;
  }
}
