#!/usr/bin/env node
/**
 * Stand-alone entry: `node packages/frontend/dist/main.js --socket-path=... --mode=...`
 * (the same as `vhost-ts frontend ...`).
 */
import { runFrontendCli } from './cli/run.js';

process.exitCode = await runFrontendCli(process.argv.slice(2));
