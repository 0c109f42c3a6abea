import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** Newest modification time among the addon's sources. */
function newestSource(nativeDir: string): number {
  const files = [path.join(nativeDir, 'binding.gyp'), ...readdirSync(path.join(nativeDir, 'cc')).map((f) => path.join(nativeDir, 'cc', f))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

/**
 * Builds before any test runs, so a test can never exercise stale output:
 * the native addon when a C++ source is newer than the built `.node`, then the
 * TypeScript projects (`tsc -b`, incremental). `VHOST_TS_BUILD` may name one
 * project (e.g. `packages/virtio`); its references are built with it.
 */
export default function build(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  const nativeDir = path.join(root, 'packages/native');
  const addon = path.join(nativeDir, 'build/Release/vhost_native.node');
  let builtAt = 0;
  try {
    builtAt = statSync(addon).mtimeMs;
  } catch {
    builtAt = 0;
  }
  if (builtAt < newestSource(nativeDir)) {
    console.log('[build] native addon is older than its sources: rebuilding');
    execFileSync('npm', ['run', 'install', '--silent'], { cwd: nativeDir, stdio: 'inherit' });
  }
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = process.env.VHOST_TS_BUILD ?? '.';
  execFileSync(process.execPath, [tsc, '-b', project], { cwd: root, stdio: 'inherit' });
}
