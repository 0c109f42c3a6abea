#!/usr/bin/env node
/**
 * `vhost-ts`: the command-line entry. Each command lives in its own module and
 * returns an exit status; usage errors print the message and exit with 2.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError } from './args.js';

type Run = (argv: string[]) => Promise<number>;
type Command = { summary: string; file: string; exportName: string };

/**
 * The commands, each in its own module under ./commands, loaded on first use
 * (a daemon never loads the front-end's code and the reverse).
 */
const commands: Record<string, Command> = {
  net: { summary: 'virtio-net back-end: vhost-ts net --socket-path=PATH [--queues=N] [--module=echo] ...', file: 'net.js', exportName: 'runNet' },
  blk: { summary: 'virtio-blk back-end: vhost-ts blk --socket-path=PATH --blk-file=FILE [--read-only] ...', file: 'blk.js', exportName: 'runBlk' },
  frontend: { summary: 'our vhost-user front-end: vhost-ts frontend --socket-path=PATH --mode=tx|rx|loop|blk-verify ...', file: 'frontend.js', exportName: 'runFrontend' },
  demo: { summary: 'the main job: net back-end (echo) + built-in front-end, traffic on every queue, live view, summary', file: 'demo.js', exportName: 'runDemo' },
};

async function load(cmd: Command): Promise<Run> {
  const mod = (await import(new URL(`./commands/${cmd.file}`, import.meta.url).href)) as Record<string, unknown>;
  const run = mod[cmd.exportName];
  if (typeof run !== 'function') throw new Error(`command module ${cmd.file} does not export ${cmd.exportName}()`);
  return run as Run;
}

function usage(): string {
  const lines = ['usage: vhost-ts <command> [options]   (vhost-ts <command> --help for its options)', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(9)} ${c.summary}`);
  return lines.join('\n');
}

/** Runs the CLI with `argv` (without node and the script path); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const cmd = commands[name];
  if (cmd === undefined) {
    console.error(`vhost-ts: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    return await (await load(cmd))(rest);
  } catch (err) {
    if (err instanceof UsageError || (err instanceof Error && err.name === 'UsageError')) {
      console.error(`vhost-ts ${name}: ${err.message}`);
      return 2;
    }
    console.error(`vhost-ts ${name}: ${(err as Error).stack ?? String(err)}`);
    return 1;
  }
}

/** True when this file is the process's entry script (also through a symlinked bin). */
function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  const status = await main(process.argv.slice(2));
  process.exitCode = status;
  // Commands release everything before returning; if a handle still holds the
  // loop, say so and exit anyway rather than hang a script.
  setTimeout(() => {
    console.error('vhost-ts: handles still open 2 s after the command finished; exiting');
    process.exit(status);
  }, 2000).unref();
}
