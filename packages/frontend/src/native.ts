/**
 * The native addon (loaded by @vhost-ts/native, which also refuses a V8 sandbox).
 */
export { native } from '@vhost-ts/native';
