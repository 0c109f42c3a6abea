/**
 * @vhost-ts/blk: the virtio-blk driver. The request module (`BLK_MODULE_URL`,
 * loaded by queue workers), its engine, inflight tracking, the config space
 * and the control side.
 */
export * from './protocol.js';
export * from './config.js';
export * from './backing.js';
export * from './inflight.js';
export { BlkEngine, type BlkEngineOptions, type IoMode, type RingCounters } from './engine.js';
export * from './driver.js';
