/**
 * @vhost-ts/workers: the per-queue worker runtime (worker.js), the
 * processing-module API and the main-thread QueueWorkerManager.
 */
export * from './manager.js';
export * from './module-api.js';
export * as controlBlock from './control-block.js';
export type { RingConfig, WorkerInit, UpdateMessage, WorkerMessage } from './protocol.js';

/** Paths of the modules shipped with the runtime (compiled JS, loadable by workers). */
export const modules = {
  sink: new URL('./modules/sink.js', import.meta.url),
  fail: new URL('./modules/fail.js', import.meta.url),
  slow: new URL('./modules/slow.js', import.meta.url),
  loopback: new URL('./modules/loopback.js', import.meta.url),
} as const;

/** Test fixtures shipped as compiled modules (not for production use). */
export const testingModules = {
  /** Completes chains from a piscina task (event-loop mode). */
  asyncPool: new URL('./testing/async-pool.js', import.meta.url),
} as const;
