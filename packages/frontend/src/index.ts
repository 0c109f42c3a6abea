/**
 * @vhost-ts/frontend: the driver side of vhost-user (our virtio-user).
 * See README.md in this package for the API and the CLI.
 */
export * from './net/packet.js';
export * from './net/accounting.js';
export * from './memory/layout.js';
export * from './blk/request.js';
export * from './cli/args.js';
