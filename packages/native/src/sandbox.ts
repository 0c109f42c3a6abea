/**
 * The addon wraps foreign memory (guest RAM mapped with mmap) in a
 * SharedArrayBuffer. With V8's sandbox enabled every ArrayBuffer must live
 * inside the sandbox's address-space cage, so such a buffer would be unsafe
 * (V8 refuses or crashes). Node 20 is built without it (`v8_enable_sandbox=0`);
 * refuse to load anywhere else with a message that says why.
 */
export function assertNoV8Sandbox(variables: Readonly<Record<string, unknown>>): void {
  const value = variables['v8_enable_sandbox'];
  if (value === 1 || value === true || value === '1' || value === 'true') {
    throw new Error(
      '@vhost-ts/native: this Node.js/V8 build has the V8 sandbox enabled (process.config.variables.v8_enable_sandbox); ' +
        'guest memory mapped with mmap cannot be exposed as a SharedArrayBuffer there. ' +
        'Run vhost-ts on a Node.js build without the V8 sandbox (official Node.js 20 builds qualify).',
    );
  }
}
