/**
 * @vhost-ts/frontend: the driver side of vhost-user (our virtio-user).
 * See README.md in this package for the API and the CLI.
 */
export * from './net/packet.js';
export * from './net/accounting.js';
export * from './net/traffic.js';
export * from './net/open.js';
export * from './memory/layout.js';
export * from './memory/guest-memory.js';
export * from './blk/request.js';
export * from './cli/args.js';
export * from './control/connection.js';
export * from './control/client.js';
export { connectUnix, acceptUnix } from './control/socket.js';
export * from './device.js';
export * from './raw.js';
export * from './blk/driver.js';
export * from './blk/open.js';
export * from './blk/verify.js';
export * from './cli/run.js';
export * from './net/parallel.js';
