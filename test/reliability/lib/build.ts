/**
 * The reliability suite runs our front-end (@vhost-ts/frontend) and the
 * `vhost-ts` CLI from their compiled dist/, but the documented command builds
 * only packages/vhost (`VHOST_TS_BUILD=packages/vhost`). ensureBuilt() runs an
 * incremental `tsc -b` of those projects once per vitest run (the test files
 * run in parallel forks: the first one builds under a lock, the others wait).
 * Type errors elsewhere (packages being edited) do not stop the run: tsc still
 * emits, and a test that needs missing output fails on its own.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../../..');

export async function ensureBuilt(projects: readonly string[] = ['packages/frontend', 'packages/cli']): Promise<void> {
  const locks = path.join(ROOT, 'test/reliability/dist/.build-locks');
  mkdirSync(locks, { recursive: true });
  // One lock per vitest run: the forks share their parent.
  const lock = path.join(locks, `run-${process.ppid}`);
  const done = path.join(lock, 'done');
  for (const old of readdirSync(locks)) {
    const p = path.join(locks, old);
    if (p !== lock && Date.now() - statSync(p).mtimeMs > 3_600_000) rmSync(p, { recursive: true, force: true });
  }
  let owner = false;
  try {
    mkdirSync(lock);
    owner = true;
  } catch {
    owner = false;
  }
  if (owner) {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    try {
      execFileSync(process.execPath, [tsc, '-b', ...projects], { cwd: ROOT, stdio: 'pipe' });
    } catch (err) {
      const out = String((err as { stdout?: Buffer }).stdout ?? '');
      console.warn(`[reliability] tsc -b ${projects.join(' ')} reported errors (using what was emitted):\n${out.slice(0, 2000)}`);
    }
    writeFileSync(done, String(Date.now()));
    return;
  }
  const end = Date.now() + 180_000;
  while (!existsSync(done)) {
    if (Date.now() > end) throw new Error('waited 180 s for another test file to build the front-end');
    await new Promise((r) => setTimeout(r, 100));
  }
}
