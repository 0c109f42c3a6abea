/**
 * The vhost-user wire codec, shared by the back-end (`@vhost-ts/vhost`) and
 * the front-end (`@vhost-ts/frontend`): request codes, header flags, feature
 * bits, payload layouts with typed encode/decode, and per-request size and fd
 * rules. Pure TypeScript, no Node imports.
 *
 * Import as `@vhost-ts/vhost/protocol`.
 *
 * @example
 * ```ts
 * import { FrontendRequest, encodeMessage, requestFlags, encodeVringState } from '@vhost-ts/vhost/protocol';
 * const bytes = encodeMessage(FrontendRequest.SET_VRING_NUM, requestFlags(), encodeVringState({ index: 0, num: 256 }));
 * ```
 *
 * @packageDocumentation
 */
export * from './constants.js';
export * from './errors.js';
export * from './header.js';
export * from './payloads.js';
export * from './rules.js';
export { NATIVE_LITTLE_ENDIAN } from './bytes.js';
