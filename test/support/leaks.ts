/**
 * Leak accounting for tests: what a process holds that a leak would grow.
 *
 * - fds (`/proc/<pid>/fd`, with their readlink targets),
 * - memory mappings (`/proc/<pid>/maps`: all lines, and the memfd-backed ones
 *   — guest memory, dirty logs and inflight areas show as `/memfd:...`),
 * - the native layer's own mappings (`liveMappings()` / `releasedMappings()`:
 *   exact, unlike the /proc count which V8's heap growth disturbs),
 * - threads (`/proc/<pid>/task`: the main thread, V8 and libuv threads and one
 *   per worker_threads Worker — a worker that never exits shows here),
 * - fds watched by event loops (the `tfd:` entries of every epoll fd in
 *   `/proc/<pid>/fdinfo`: a Poller left started, in any thread, shows here).
 *
 * ```ts
 * const base = await settledSnapshot();              // this process, after GC
 * ... run something ...
 * await assertBackToBaseline(base, { timeoutMs: 5000 }); // throws naming every leaked fd / mapping / thread
 * ```
 * For a child process: `snapshot({ pid, native: countsFromChild })`, and pass
 * `probe` to {@link assertBackToBaseline} so each poll asks the child again.
 *
 * The older helpers ({@link countResources}, {@link describeFds},
 * {@link eventually}) are kept as they were: other packages' tests use them.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native as nativeBinding } from '@vhost-ts/native';

/** What a process holds that a leak would grow: open fds and memory mappings. */
export interface ResourceCounts {
  fds: number;
  mappings: number;
}

/** Counts this process's open fds (`/proc/self/fd`) and mappings (`/proc/self/maps`). */
export function countResources(pid: number | 'self' = 'self'): ResourceCounts {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const mappings = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.length > 0).length;
  return { fds, mappings };
}

/** Lists the fds with their targets (for a helpful failure message). */
export function describeFds(pid: number | 'self' = 'self'): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(`${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
    } catch {
      out.push(fd);
    }
  }
  return out;
}

/** Polls until `check` passes or `timeoutMs` runs out (GC-driven munmap is asynchronous). */
export async function eventually(check: () => boolean, timeoutMs = 5000, stepMs = 20): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > end) return false;
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

// ---- snapshots ---------------------------------------------------------------------------------

/** The native layer's mapping counters of a process. */
export interface NativeCounts {
  /** Mappings made by native.mmap, not yet released or unmapped. */
  live: number;
  /** Released mappings whose zero overlay waits for the GC to unmap it. */
  released: number;
}

/** Everything {@link assertBackToBaseline} compares. */
export interface ResourceSnapshot {
  pid: number | 'self';
  /** fd number -> readlink target (`socket:[123]`, `anon_inode:[eventfd]`, `/memfd:x (deleted)`, ...). */
  fds: Map<number, string>;
  /** Lines of /proc/<pid>/maps. */
  mappings: number;
  /** maps lines without address and offset -> how many (for a readable diff). */
  mapKeys: Map<string, number>;
  /** maps lines of memfd-backed mappings (guest memory, logs, inflight areas). */
  memfdMappings: string[];
  /** Threads (/proc/<pid>/task). */
  threads: number;
  /** fds registered in the process's epoll sets (event loops of every thread): epoll fd -> watched fds. */
  epollWatches: Map<number, number[]>;
  /** The native layer's counters, when known (this process, or reported by a child). */
  native: NativeCounts | null;
}

function readFds(pid: number | 'self'): Map<number, string> {
  const out = new Map<number, string>();
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      out.set(Number(name), readlinkSync(`/proc/${pid}/fd/${name}`));
    } catch {
      // closed while listing (e.g. the fd readdir itself used)
    }
  }
  return out;
}

function readEpollWatches(pid: number | 'self', fds: Map<number, string>): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const [fd, target] of fds) {
    if (target !== 'anon_inode:[eventpoll]') continue;
    try {
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const watched: number[] = [];
      for (const m of info.matchAll(/^tfd:\s+(\d+)/gm)) watched.push(Number(m[1]));
      out.set(fd, watched);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function mapKey(line: string): string {
  // "start-end perms offset dev inode path": keep perms and path.
  const parts = line.split(/\s+/);
  return `${parts[1] ?? ''} ${parts.slice(5).join(' ')}`.trim();
}

/**
 * A snapshot of a process's resources. `pid` defaults to this process;
 * `native` defaults to this process's native counters for 'self' and to
 * null (unknown) for another pid — pass what the child reports.
 */
export function snapshot(options: { pid?: number | 'self'; native?: NativeCounts | null } = {}): ResourceSnapshot {
  const pid = options.pid ?? 'self';
  const fds = readFds(pid);
  let lines: string[] = [];
  try {
    lines = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.length > 0);
  } catch {
    lines = [];
  }
  const mapKeys = new Map<string, number>();
  for (const l of lines) {
    const k = mapKey(l);
    mapKeys.set(k, (mapKeys.get(k) ?? 0) + 1);
  }
  let threads = 0;
  try {
    threads = readdirSync(`/proc/${pid}/task`).length;
  } catch {
    threads = 0;
  }
  const nativeCounts =
    options.native !== undefined
      ? options.native
      : pid === 'self' || pid === process.pid
        ? { live: nativeBinding.liveMappings(), released: nativeBinding.releasedMappings() }
        : null;
  return {
    pid,
    fds,
    mappings: lines.length,
    mapKeys,
    memfdMappings: lines.filter((l) => l.includes('/memfd:')).map(mapKey),
    threads,
    epollWatches: readEpollWatches(pid, fds),
    native: nativeCounts,
  };
}

/** Makes `globalThis.gc` available in this process (vitest forks do not pass --expose-gc). */
export function ensureGc(): () => void {
  const g = globalThis as { gc?: () => void };
  if (g.gc === undefined) {
    v8.setFlagsFromString('--expose-gc');
    g.gc = vm.runInNewContext('gc') as () => void;
  }
  return g.gc!;
}

/** Runs the GC a few times with pauses (munmap of released mappings happens in V8's background thread). */
export async function collectGarbage(rounds = 3): Promise<void> {
  const gc = ensureGc();
  for (let i = 0; i < rounds; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A snapshot of this process taken after the GC has unmapped what earlier
 * work released (so the baseline does not count dying mappings).
 */
export async function settledSnapshot(timeoutMs = 3000): Promise<ResourceSnapshot> {
  ensureGc();
  await eventually(() => nativeBinding.releasedMappings() === 0, timeoutMs);
  await collectGarbage(2);
  return snapshot();
}

/** Options of {@link compareToBaseline} / {@link assertBackToBaseline}. */
export interface BaselineOptions {
  /**
   * V8 grows its heap in anonymous mappings at unpredictable times: the total
   * maps count may exceed the baseline by this much without a leak (default
   * 64). memfd mappings and native counters are compared exactly.
   */
  heapSlack?: number;
  /** Extra threads tolerated (default 0). */
  threadSlack?: number;
  /** Also compare epoll watch counts (default true). */
  epoll?: boolean;
}

function totalWatches(s: ResourceSnapshot): number {
  let n = 0;
  for (const w of s.epollWatches.values()) n += w.length;
  return n;
}

/**
 * What `now` holds beyond `base`, one line per problem (empty: back to
 * baseline). Leaked fds are named with their targets, leaked mappings with
 * their /proc/maps path, watched fds with their numbers.
 */
export function compareToBaseline(base: ResourceSnapshot, now: ResourceSnapshot, options: BaselineOptions = {}): string[] {
  const problems: string[] = [];
  const heapSlack = options.heapSlack ?? 64;
  if (now.fds.size > base.fds.size) {
    const extra = [...now.fds].filter(([fd, t]) => base.fds.get(fd) !== t).map(([fd, t]) => `${fd} -> ${t}`);
    problems.push(`fds: ${now.fds.size} (baseline ${base.fds.size}); new: ${extra.join(', ')}`);
  }
  if (now.memfdMappings.length > base.memfdMappings.length) {
    const left = [...now.memfdMappings];
    for (const m of base.memfdMappings) {
      const i = left.indexOf(m);
      if (i >= 0) left.splice(i, 1);
    }
    problems.push(`memfd mappings: ${now.memfdMappings.length} (baseline ${base.memfdMappings.length}); new: ${left.join(', ')}`);
  }
  if (now.native !== null && base.native !== null) {
    if (now.native.live > base.native.live) problems.push(`native live mappings: ${now.native.live} (baseline ${base.native.live})`);
    if (now.native.released > base.native.released) problems.push(`native released mappings not yet unmapped: ${now.native.released} (baseline ${base.native.released})`);
  }
  if (now.mappings > base.mappings + heapSlack) {
    const diff: string[] = [];
    for (const [k, n] of now.mapKeys) {
      const d = n - (base.mapKeys.get(k) ?? 0);
      if (d > 0) diff.push(`+${d} ${k}`);
    }
    problems.push(`mappings: ${now.mappings} (baseline ${base.mappings} + slack ${heapSlack}); grown: ${diff.join('; ')}`);
  }
  if (now.threads > base.threads + (options.threadSlack ?? 0)) {
    problems.push(`threads: ${now.threads} (baseline ${base.threads}): a worker thread did not exit`);
  }
  if ((options.epoll ?? true) && totalWatches(now) > totalWatches(base)) {
    const desc = [...now.epollWatches].map(([ep, w]) => `epoll fd ${ep} watches [${w.join(',')}]`).join('; ');
    problems.push(`event-loop watches: ${totalWatches(now)} (baseline ${totalWatches(base)}): ${desc}`);
  }
  return problems;
}

/** One-line summary of a snapshot (for logs and reports). */
export function summarize(s: ResourceSnapshot): string {
  const n = s.native === null ? '' : ` native live ${s.native.live} released ${s.native.released}`;
  return `pid ${s.pid}: fds ${s.fds.size}, mappings ${s.mappings} (memfd ${s.memfdMappings.length}), threads ${s.threads}, watches ${totalWatches(s)}${n}`;
}

/** Thrown by {@link assertBackToBaseline}. */
export class ResourceLeakError extends Error {
  constructor(readonly problems: string[], readonly base: ResourceSnapshot, readonly now: ResourceSnapshot) {
    super(`resources not back to baseline (${summarize(now)} vs ${summarize(base)}):\n  ${problems.join('\n  ')}`);
    this.name = 'ResourceLeakError';
  }
}

/**
 * Polls until the process is back to `base` (fds, memfd mappings, native
 * mappings, threads, event-loop watches; total mappings within the heap
 * slack), running the GC between polls. Throws a {@link ResourceLeakError}
 * naming what leaked when `timeoutMs` (default 5000) runs out.
 * `probe` takes a fresh snapshot (default: this process or `base.pid`, after
 * a GC round); pass one that asks a child for its native counters.
 */
export async function assertBackToBaseline(
  base: ResourceSnapshot,
  options: BaselineOptions & { timeoutMs?: number; probe?: () => Promise<ResourceSnapshot> } = {},
): Promise<ResourceSnapshot> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const probe =
    options.probe ??
    (async () => {
      if (base.pid === 'self' || base.pid === process.pid) await collectGarbage(1);
      return snapshot({ pid: base.pid });
    });
  const end = Date.now() + timeoutMs;
  for (;;) {
    const now = await probe();
    const problems = compareToBaseline(base, now, options);
    if (problems.length === 0) return now;
    if (Date.now() > end) throw new ResourceLeakError(problems, base, now);
    await new Promise((r) => setTimeout(r, 25));
  }
}
