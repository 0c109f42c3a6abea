/**
 * @vhost-ts/native: loads the addon (`build/Release/vhost_native.node`, built by
 * this package's install script) after checking that the V8 sandbox is off.
 * The contract, with its documentation, is in ./api.ts.
 */
import { createRequire } from 'node:module';
import type { NativeBinding, Poller as PollerInstance, PollerConstructor } from './api.js';
import { assertNoV8Sandbox } from './sandbox.js';

export * from './api.js';
export * from './constants.js';
export { assertNoV8Sandbox } from './sandbox.js';

assertNoV8Sandbox(process.config.variables as unknown as Readonly<Record<string, unknown>>);

/** The addon itself. */
export const native: NativeBinding = createRequire(import.meta.url)('../build/Release/vhost_native.node') as NativeBinding;

export const {
  mmap,
  release,
  liveMappings,
  releasedMappings,
  pageSize,
  fstatSize,
  getSeals,
  addSeals,
  memfdCreate,
  ftruncate,
  close,
  dup,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  setNonBlocking,
  pollReadable,
  unixListen,
  unixAccept,
  unixConnect,
  socketpair,
  sendmsg,
  recvmsg,
  recvmsgCapped,
  shutdown,
  setAffinity,
  getAffinity,
  gettid,
} = native;

/** `new Poller(fd, (events, eventfdValue) => ..., drainEventfd?)`; see {@link PollerConstructor}. */
export const Poller: PollerConstructor = native.Poller;
export type Poller = PollerInstance;
