/**
 * Long runs of the control-plane fuzzer (the CI run is fuzz-control.test.ts).
 *
 *   npx tsc -p test/reliability && node test/reliability/dist/reliability/fuzz-cli.js [options]
 *
 *   --messages N     stop after N messages (default 1000000)
 *   --minutes M      stop after M minutes (default: no limit)
 *   --seed S         PRNG seed (default: random, printed)
 *   --lanes L        concurrent connections (default 3)
 *   --chunk N        messages between leak checks (default 20000)
 *   --only K         replay connection K of --seed alone: print its plan and outcome
 *   --no-witness     no well-behaved traffic connection alongside
 *
 * The back-end is a child process (fixtures/backend.mjs: VhostUserDriver +
 * data plane + loopback module). After every chunk the fuzzer lets the
 * back-end settle and compares its fds, mappings, threads and event-loop
 * watches with the baseline. A back-end death counts as a crash (its stderr
 * is printed; a new back-end is started and the run goes on). Prints a
 * progress line per chunk and a JSON summary; exits 1 on any crash, leak,
 * finding or witness stall.
 */
import { assertBackToBaseline, ResourceLeakError, type ResourceSnapshot } from '../support/leaks.js';
import { BackendProcess } from './lib/backend-process.js';
import { buildPlan, describePlan, FuzzLane, fuzzControlPlane, FUZZ_DRIVER_FEATURES, FUZZ_MAX_QUEUES, runConnection, type Finding } from './lib/control-fuzz.js';
import { startWitness, type Witness } from './lib/witness.js';

interface Args {
  messages: number;
  minutes: number;
  seed: number;
  lanes: number;
  chunk: number;
  only: number | null;
  witness: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { messages: 1_000_000, minutes: Infinity, seed: (Math.random() * 0x7fff_ffff) | 0, lanes: 3, chunk: 20_000, only: null, witness: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): number => {
      const n = Number(argv[++i]);
      if (!Number.isFinite(n)) throw new Error(`${k} needs a number`);
      return n;
    };
    if (k === '--messages') a.messages = v();
    else if (k === '--minutes') a.minutes = v();
    else if (k === '--seed') a.seed = v();
    else if (k === '--lanes') a.lanes = v();
    else if (k === '--chunk') a.chunk = v();
    else if (k === '--only') a.only = v();
    else if (k === '--no-witness') a.witness = false;
    else throw new Error(`unknown option ${k} (see the header of fuzz-cli.ts)`);
  }
  return a;
}

const DRIVER = { name: 'fuzz', module: 'loopback', queuesPerWorker: 2, maxQueues: FUZZ_MAX_QUEUES, features: FUZZ_DRIVER_FEATURES, config: true, inflight: true, ackTimeoutMs: 2000, callbackTimeoutMs: 5000 };

async function settledSnapshot(be: BackendProcess): Promise<ResourceSnapshot> {
  for (let i = 0; i < 100; i++) {
    const n = await be.nativeCounts(true);
    if (n.released === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return be.snapshot();
}

async function startBackend(): Promise<{ be: BackendProcess; baseline: ResourceSnapshot }> {
  const be = await BackendProcess.start({ drivers: [DRIVER] });
  const w = await startWitness(be.sockets.fuzz!);
  await w.flows(100);
  await w.close();
  return { be, baseline: await settledSnapshot(be) };
}

async function replay(args: Args): Promise<void> {
  const { plan, mutations, terminal } = buildPlan(args.seed, args.only!);
  console.log(`seed ${args.seed} connection ${args.only}: mutations ${mutations.join(',') || 'none'}, terminal ${terminal ?? 'none'}\n${describePlan(plan)}`);
  const be = await BackendProcess.start({ drivers: [DRIVER], echo: true });
  const lane = new FuzzLane(0);
  try {
    const outcome = await runConnection(be.sockets.fuzz!, lane, args.seed, args.only!, 8000);
    await new Promise((r) => setTimeout(r, 500));
    console.log(JSON.stringify({ ...outcome, findings: outcome.findings.map((f) => `${f.kind}: ${f.detail}`), backendAlive: be.alive }, null, 2));
  } finally {
    lane.close();
    await be.stop();
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.only !== null) {
    await replay(args);
    return 0;
  }
  const deadline = Date.now() + args.minutes * 60_000;
  console.log(`control-plane fuzz: seed ${args.seed}, up to ${args.messages} messages${Number.isFinite(args.minutes) ? ` or ${args.minutes} min` : ''}, ${args.lanes} lanes`);
  let { be, baseline } = await startBackend();
  let witness: Witness | null = args.witness ? await startWitness(be.sockets.fuzz!) : null;
  const totals = { messages: 0, connections: 0, closedByBackend: 0, failureReplies: 0, crashes: 0, leaks: 0, findings: [] as Finding[], witnessStalls: 0, witnessWindows: 0, devicesReady: 0 };
  const t0 = Date.now();
  let nextConnection = 0;
  let lastReceived = witness?.received() ?? 0;
  const monitor = setInterval(() => {
    if (witness === null) return;
    const now = witness.received();
    totals.witnessWindows++;
    if (now === lastReceived) totals.witnessStalls++;
    lastReceived = now;
  }, 2000);
  try {
    while (totals.messages < args.messages && Date.now() < deadline) {
      const chunk = Math.min(args.chunk, args.messages - totals.messages);
      let maxIndex = nextConnection;
      const stats = await fuzzControlPlane({
        socketPath: be.sockets.fuzz!,
        seed: args.seed,
        messages: chunk,
        lanes: args.lanes,
        firstConnection: nextConnection,
        shouldStop: () => !be.alive || Date.now() >= deadline,
        onConnection: (index) => {
          maxIndex = Math.max(maxIndex, index + 1);
        },
      });
      nextConnection = maxIndex;
      totals.messages += stats.messages;
      totals.connections += stats.connections;
      totals.closedByBackend += stats.closedByBackend;
      totals.failureReplies += stats.failureReplies;
      totals.findings.push(...stats.findings);
      for (const f of stats.findings) console.log(`FINDING [${f.kind}] seed=${f.seed} connection=${f.connection}: ${f.detail}\n${f.plan}`);
      if (!be.alive) {
        totals.crashes++;
        console.log(`CRASH: the back-end died (${JSON.stringify(be.exitInfo)}) near connection ${nextConnection}; stderr:\n${be.stderr()}`);
        await witness?.close().catch(() => undefined);
        await be.stop();
        ({ be, baseline } = await startBackend());
        witness = args.witness ? await startWitness(be.sockets.fuzz!) : null;
        lastReceived = witness?.received() ?? 0;
        continue;
      }
      const logs = await be.logs();
      totals.devicesReady = logs.ready;
      if (logs.internal > 0) {
        totals.findings.push({ seed: args.seed, connection: -1, kind: 'bad-reply', detail: `internal errors in the back-end log: ${logs.tail.filter((l) => l.includes('internal error')).join(' | ')}`, plan: '' });
      }
      // Leak check while the lanes are idle: the witness's device is not in the baseline, so
      // close it first, compare, then start a new one.
      await witness?.close();
      try {
        await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 15_000 });
      } catch (err) {
        totals.leaks++;
        console.log(`LEAK after ${totals.messages} messages: ${err instanceof ResourceLeakError ? err.problems.join('; ') : String(err)}`);
        baseline = await settledSnapshot(be);
      }
      witness = args.witness ? await startWitness(be.sockets.fuzz!) : null;
      lastReceived = witness?.received() ?? 0;
      const s = (Date.now() - t0) / 1000;
      console.log(
        `${new Date().toISOString()} messages ${totals.messages} connections ${totals.connections} (${(totals.messages / s).toFixed(0)}/s) devices ready ${totals.devicesReady} crashes ${totals.crashes} leaks ${totals.leaks} findings ${totals.findings.length} witness stalls ${totals.witnessStalls}/${totals.witnessWindows}`,
      );
    }
  } finally {
    clearInterval(monitor);
    await witness?.close().catch(() => undefined);
    await be.stop();
  }
  const seconds = (Date.now() - t0) / 1000;
  const summary = { seed: args.seed, seconds: Math.round(seconds), messages: totals.messages, connections: totals.connections, closedByBackend: totals.closedByBackend, failureReplies: totals.failureReplies, devicesReady: totals.devicesReady, crashes: totals.crashes, leaks: totals.leaks, findings: totals.findings.length, witnessStalls: totals.witnessStalls, witnessWindows: totals.witnessWindows };
  console.log(JSON.stringify(summary));
  return totals.crashes + totals.leaks + totals.findings.length + totals.witnessStalls > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
