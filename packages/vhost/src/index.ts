/**
 * `@vhost-ts/vhost`: the vhost-user control plane and the driver API (the
 * idea of DPDK's generic vhost API, rte_vhost.h, for Node.js).
 *
 * - {@link VhostUserDriver}: a socket (server or client), its offered
 *   features, callbacks and devices.
 * - {@link VhostDevice}: one front-end's device — negotiated features, memory
 *   table, vrings, dirty log, inflight area, config-change notification.
 * - {@link VhostCallbacks}: newDevice / destroyDevice / vringStateChanged /
 *   featuresChanged / memoryChanging / memoryChanged / ... with the exact
 *   contract on who owns the vring indices when.
 * - The wire codec is a separate entry point: `@vhost-ts/vhost/protocol`.
 *
 * @packageDocumentation
 */
export { VhostUserDriver, DEFAULT_FEATURES, DEFAULT_PROTOCOL_FEATURES, IMPLEMENTED_PROTOCOL_FEATURES, MAX_QUEUES_LIMIT } from './driver.js';
export type { VhostUserDriverOptions } from './driver.js';
export type { VhostCallbacks, ConfigSpace, MaybePromise } from './callbacks.js';
export { VhostDevice } from './device/device.js';
export type { MemoryInfo, DirtyLogInfo, InflightInfo } from './device/device.js';
export type { VringInfo, VringIndices } from './device/vring.js';
export type { MemoryRegion, MemoryView, GpaTranslation } from './memory/table.js';
export { MAX_VIEW_BYTES } from './memory/table.js';
export { inflightQueueRegionSize } from './memory/inflight.js';
export { stderrLogger, silentLogger, prefixedLogger } from './log.js';
export type { Logger, LogLevel } from './log.js';
export { VhostRequestError, CallbackTimeoutError } from './errors.js';
export * from './features.js';
// The data plane: driver callbacks mapped onto per-queue worker threads.
export { attachDataPlane, ringSpec } from './dataplane/index.js';
export type { DataPlane, DataPlaneOptions } from './dataplane/index.js';
