export * from './util.js';
export * from './process.js';
export * from './testpmd.js';
export * from './guest.js';
export * from './qemu.js';
export * from './storage-daemon.js';
