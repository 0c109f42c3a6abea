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
 *   --from K         start at connection K (resume a run)
 *   --no-witness     no well-behaved traffic connection alongside
 *   --skip-known     rewrite the triggers of reported defects (lib/control-fuzz.ts avoidKnownDefects)
 *                    so the run keeps exploring instead of crashing on them again
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
  from: number;
  witness: boolean;
  skipKnown: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { messages: 1_000_000, minutes: Infinity, seed: (Math.random() * 0x7fff_ffff) | 0, lanes: 3, chunk: 20_000, only: null, from: 0, witness: true, skipKnown: false };
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
    else if (k === '--from') a.from = v();
    else if (k === '--no-witness') a.witness = false;
    else if (k === '--skip-known') a.skipKnown = true;
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
    const outcome = await runConnection(be.sockets.fuzz!, lane, args.seed, args.only!, 8000, { avoidKnownDefects: args.skipKnown });
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
  console.log(`control-plane fuzz: seed ${args.seed}, up to ${args.messages} messages${Number.isFinite(args.minutes) ? ` or ${args.minutes} min` : ''}, ${args.lanes} lanes${args.skipKnown ? ', known defects avoided' : ''}`);
  let { be, baseline } = await startBackend();
  let witness: Witness | null = args.witness ? await startWitness(be.sockets.fuzz!) : null;
  const totals = { messages: 0, connections: 0, closedByBackend: 0, failureReplies: 0, crashes: 0, leaks: 0, findings: [] as Finding[], witnessStalls: 0, witnessMaxGapMs: 0, devicesReady: 0, heapGrowth: 0, internalErrors: {} as Record<string, number> };
  const t0 = Date.now();
  let nextConnection = args.from;
  /** Per back-end process: internal-error lines already reported, devices ready before a restart. */
  let internalSeen = 0;
  let heapGrowthInARow = 0;
  let readyBefore = 0;
  // The witness: the longest time without a received frame, and gaps over 2 s (stalls).
  let lastReceived = witness?.received() ?? 0;
  let lastProgressAt = Date.now();
  let inStall = false;
  let monitoring = true;
  const monitor = setInterval(() => {
    if (witness === null || !monitoring) return;
    const now = witness.received();
    if (now !== lastReceived) {
      lastReceived = now;
      lastProgressAt = Date.now();
      inStall = false;
      return;
    }
    const gap = Date.now() - lastProgressAt;
    totals.witnessMaxGapMs = Math.max(totals.witnessMaxGapMs, gap);
    if (gap > 2000 && !inStall) {
      inStall = true;
      totals.witnessStalls++;
    }
  }, 100);
  const resetWitnessClock = (): void => {
    monitoring = true;
    lastReceived = witness?.received() ?? 0;
    lastProgressAt = Date.now();
    inStall = false;
  };
  // Ctrl-C / SIGTERM: stop the children too.
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    while (totals.messages < args.messages && Date.now() < deadline && !interrupted) {
      const chunk = Math.min(args.chunk, args.messages - totals.messages);
      let maxIndex = nextConnection;
      const stats = await fuzzControlPlane({
        socketPath: be.sockets.fuzz!,
        seed: args.seed,
        messages: chunk,
        lanes: args.lanes,
        firstConnection: nextConnection,
        shouldStop: () => !be.alive || Date.now() >= deadline || interrupted,
        avoidKnownDefects: args.skipKnown,
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
      monitoring = false;
      if (!be.alive) {
        totals.crashes++;
        await be.exited;
        const suspects = [...stats.recent].sort((x, y) => x - y);
        console.log(`CRASH: the back-end died (${JSON.stringify(be.exitInfo)}); the last connections started were ${suspects.join(', ')} (replay each with --seed ${args.seed} --only K); stderr:\n${be.stderr()}`);
        for (const k of suspects) console.log(`connection ${k}:\n${describePlan(buildPlan(args.seed, k).plan)}`);
        totals.findings = totals.findings.filter((f) => f.kind !== 'connect');
        await witness?.close().catch(() => undefined);
        readyBefore = totals.devicesReady;
        internalSeen = 0;
        await be.stop();
        ({ be, baseline } = await startBackend());
        witness = args.witness ? await startWitness(be.sockets.fuzz!) : null;
        resetWitnessClock();
        continue;
      }
      const logs = await be.logs();
      totals.devicesReady = readyBefore + logs.ready;
      if (logs.internal > internalSeen) {
        const lines = logs.internalLines;
        console.log(`INTERNAL ERROR(S) in the back-end log (${logs.internal - internalSeen} new; last connections ${[...stats.recent].sort((x, y) => x - y).join(', ')}):\n${lines.join('\n')}`);
        for (const l of lines.slice(-(logs.internal - internalSeen))) {
          const sig = /internal error: ([^\n]*)/.exec(l)?.[1]?.replace(/\d+/g, 'N') ?? 'unknown';
          totals.internalErrors[sig] = (totals.internalErrors[sig] ?? 0) + 1;
        }
        totals.findings.push({ seed: args.seed, connection: -1, kind: 'bad-reply', detail: `internal errors in the back-end log: ${lines.join(' | ')}`, plan: '' });
        internalSeen = logs.internal;
      }
      // Leak check while the lanes are idle: the witness's device is not in the baseline, so
      // close it first, compare, then start a new one.
      await witness?.close();
      try {
        await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 15_000 });
        heapGrowthInARow = 0;
      } catch (err) {
        // fds, memfd mappings, native mappings, threads and watches are exact; the total of
        // /proc maps lines is a heuristic (V8 heap pages, malloc arenas of exited threads).
        // Growth of that total alone counts as a leak only when it recurs three checks in a row.
        const problems = err instanceof ResourceLeakError ? err.problems : [String(err)];
        const exact = problems.filter((p) => !p.startsWith('mappings:'));
        heapGrowthInARow = exact.length === 0 ? heapGrowthInARow + 1 : 0;
        if (exact.length > 0 || heapGrowthInARow >= 3) {
          totals.leaks++;
          console.log(`LEAK after ${totals.messages} messages: ${problems.join('; ')}`);
        } else {
          totals.heapGrowth++;
          console.log(`note: anonymous mappings grew past the heap slack after ${totals.messages} messages (exact counters at baseline; re-baselined): ${problems.join('; ')}`);
        }
        baseline = await settledSnapshot(be);
      }
      witness = args.witness ? await startWitness(be.sockets.fuzz!) : null;
      resetWitnessClock();
      const s = (Date.now() - t0) / 1000;
      console.log(
        `${new Date().toISOString()} messages ${totals.messages} connections ${totals.connections} (${(totals.messages / s).toFixed(0)}/s) devices ready ${totals.devicesReady} crashes ${totals.crashes} leaks ${totals.leaks} findings ${totals.findings.length} witness stalls ${totals.witnessStalls} (longest gap ${totals.witnessMaxGapMs} ms)`,
      );
    }
  } finally {
    clearInterval(monitor);
    await witness?.close().catch(() => undefined);
    await be.stop();
  }
  const seconds = (Date.now() - t0) / 1000;
  const summary = { seed: args.seed, skipKnown: args.skipKnown, seconds: Math.round(seconds), messages: totals.messages, connections: totals.connections, closedByBackend: totals.closedByBackend, failureReplies: totals.failureReplies, devicesReady: totals.devicesReady, crashes: totals.crashes, leaks: totals.leaks, heapGrowthNotes: totals.heapGrowth, findings: totals.findings.length, witnessStalls: totals.witnessStalls, witnessMaxGapMs: totals.witnessMaxGapMs, internalErrors: totals.internalErrors };
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
