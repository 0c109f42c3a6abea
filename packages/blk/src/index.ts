/**
 * @vhost-ts/blk: the virtio-blk driver. The request module (`blkModuleUrl`,
 * loaded by queue workers), its engine, inflight tracking, the config space
 * and the control side.
 */
export * from './protocol.js';
export * from './config.js';
export * from './backing.js';
export * from './inflight.js';
export { BlkEngine, type BlkEngineOptions, type IoMode, type RingCounters } from './engine.js';

/** The processing module (compiled JavaScript) for the queue-worker runtime. */
export const blkModuleUrl = new URL('./modules/blk.js', import.meta.url);
