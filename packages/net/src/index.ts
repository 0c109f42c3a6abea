/**
 * @vhost-ts/net: the vhost-user virtio-net driver — control side (features,
 * config space, RARP, queue pairs), the per-queue-pair data path shared by the
 * processing modules, and the shipped modules (echo, macswap, sink,
 * responder, switch).
 */
export * from './packet/index.js';
export * from './virtio-net.js';
export * from './datapath.js';
export * from './module-kit.js';
export * from './switch-fabric.js';

export * from './driver.js';
