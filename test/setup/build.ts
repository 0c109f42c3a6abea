import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

/**
 * Builds the TypeScript projects before any test runs. `VHOST_TS_BUILD` may name
 * one project (e.g. `packages/virtio`); its references are built with it.
 */
export default function build(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = process.env.VHOST_TS_BUILD ?? '.';
  execFileSync(process.execPath, [tsc, '-b', project], { cwd: root, stdio: 'inherit' });
}
