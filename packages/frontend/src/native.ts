/**
 * The native addon, loaded once per thread.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { NativeBinding } from '@vhost-ts/native';

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  // packages/native/dist/index.js -> packages/native/build/Release/vhost_native.node
  const entry = require.resolve('@vhost-ts/native');
  return require(path.join(path.dirname(entry), '..', 'build', 'Release', 'vhost_native.node')) as NativeBinding;
}

export const native: NativeBinding = load();
