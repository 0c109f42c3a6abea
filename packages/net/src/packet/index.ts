export * from './ethernet.js';
export * from './ipv4.js';
export * from './responder.js';
export * from './mac-table.js';
export * from './rarp.js';
