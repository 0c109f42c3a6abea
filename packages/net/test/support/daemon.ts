/**
 * `vhost-ts net` as a child process for the real-peer tests
 * (test/net-*.test.ts): start, read its JSON statistics lines, count its fds
 * and mappings, stop it with SIGTERM and time the exit.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { ManagedProcess, repoRoot, waitForPath, type ExitStatus } from '@vhost-ts/peers';

/** The built CLI entry point. */
export const CLI_MAIN = path.join(repoRoot(), 'packages/cli/dist/main.js');

export function isCliBuilt(): boolean {
  return existsSync(CLI_MAIN);
}

/** One JSON statistics line of the daemon (rates per second per queue row; drops are totals). */
export interface StatsLine {
  ts: string;
  queues: Record<string, Record<string, number>>;
}

export interface DaemonOptions {
  /** Socket paths (one per port). */
  socketPaths: string[];
  /** More arguments (`--queues=2`, `--module=responder`, ...). */
  args?: string[];
  name?: string;
  onOutput?: (text: string) => void;
}

export class NetDaemon {
  private constructor(
    readonly proc: ManagedProcess,
    readonly socketPaths: string[],
  ) {}

  /** Starts the daemon and waits until every socket listens. */
  static async start(o: DaemonOptions): Promise<NetDaemon> {
    const args = [CLI_MAIN, 'net', ...o.socketPaths.map((p) => `--socket-path=${p}`), ...(o.args ?? [])];
    const proc = new ManagedProcess(process.execPath, args, {
      name: o.name ?? 'vhost-ts-net',
      ...(o.onOutput !== undefined ? { onOutput: o.onOutput } : {}),
    });
    const d = new NetDaemon(proc, o.socketPaths);
    try {
      await proc.waitForOutput(/net back-end: module/, { timeoutMs: 20_000 });
      for (const p of o.socketPaths) await waitForPath(p, { timeoutMs: 5000 });
    } catch (e) {
      await proc.close();
      throw e;
    }
    return d;
  }

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.running;
  }

  /** Output position, to wait for something printed after now. */
  get position(): number {
    return this.proc.output.position;
  }

  /** Waits for `pattern` in what the daemon prints from `since` on. */
  async waitFor(pattern: RegExp | string, since: number, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    return this.proc.waitForOutput(pattern, { since, timeoutMs });
  }

  /** Every statistics line printed since `since` (default: all retained). */
  statsLines(since?: number): StatsLine[] {
    const text = since === undefined ? this.proc.output.text() : this.proc.output.since(since);
    const out: StatsLine[] = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith('{"ts"')) continue;
      try {
        out.push(JSON.parse(line) as StatsLine);
      } catch {
        // a line cut by the ring buffer start
      }
    }
    return out;
  }

  /** The first statistics line printed after `since`. */
  async nextStats(since: number, timeoutMs = 10_000): Promise<StatsLine> {
    await this.proc.waitForOutput(/\{"ts"[^\n]*\}\n/, { since, timeoutMs });
    const lines = this.statsLines(since);
    return lines[0]!;
  }

  /** Open fds and memory mappings of the daemon process. */
  resources(): { fds: number; mappings: number } {
    const fds = readdirSync(`/proc/${this.pid}/fd`).length;
    const mappings = readFileSync(`/proc/${this.pid}/maps`, 'utf8').split('\n').filter((l) => l.length > 0).length;
    return { fds, mappings };
  }

  /** The fds with their targets (for failure messages). */
  describeFds(): string {
    return readdirSync(`/proc/${this.pid}/fd`)
      .map((fd) => {
        try {
          return `${fd} -> ${readlinkSync(`/proc/${this.pid}/fd/${fd}`)}`;
        } catch {
          return fd;
        }
      })
      .join('\n');
  }

  /** CPU time (user + system) of the daemon in seconds, from /proc/<pid>/stat. */
  cpuSeconds(): number {
    return cpuSecondsOf(this.pid);
  }

  /** SIGTERM; resolves with the exit status and how long the exit took (ms). Kills it if it does not exit in `timeoutMs`. */
  async stop(timeoutMs = 5000): Promise<{ status: ExitStatus; ms: number }> {
    const t0 = performance.now();
    if (this.proc.running) this.proc.signal('SIGTERM');
    try {
      const status = await this.proc.waitForExit(timeoutMs);
      return { status, ms: performance.now() - t0 };
    } finally {
      await this.proc.close();
    }
  }

  /** Kills whatever is left (idempotent). */
  async close(): Promise<void> {
    await this.proc.close({ termMs: 3000 });
  }
}

/** CPU seconds (utime + stime) of a process, from /proc/<pid>/stat (clock ticks of 100 Hz). */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which is in parentheses and may hold spaces).
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return (utime + stime) / 100;
}
