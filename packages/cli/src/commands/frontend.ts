import { runFrontendCli } from '@vhost-ts/frontend';

/** `vhost-ts frontend ...`: our vhost-user front-end (see packages/frontend). */
export async function runFrontend(argv: string[]): Promise<number> {
  return runFrontendCli(argv);
}
