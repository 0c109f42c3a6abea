import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

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
