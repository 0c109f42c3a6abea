// comlink 4.4.2 has no exports map: under module NodeNext its ESM node adapter needs this declaration.
declare module 'comlink/dist/esm/node-adapter.mjs' {
  import type { Endpoint } from 'comlink';
  export default function nodeEndpoint(nep: unknown): Endpoint;
}
