/**
 * `vhost-ts frontend ...`: parse arguments, open the device, run the mode,
 * print progress (a line on a TTY, JSON lines otherwise) and a final JSON
 * summary. Returns the exit code (0 ok, 1 run failed, 2 bad arguments); never
 * calls process.exit.
 */
import type { Writable } from 'node:stream';
import { native } from '../native.js';
import { BlkDriver } from '../blk/driver.js';
import { openBlkDevice } from '../blk/open.js';
import { blkVerify, type BlkVerifySummary } from '../blk/verify.js';
import type { FrontendDevice } from '../device.js';
import { openNetDevice } from '../net/open.js';
import { NetTraffic, type NetTrafficOptions, type TrafficProgress, type TrafficResult } from '../net/traffic.js';
import { ParallelNetTraffic } from '../net/parallel.js';
import { FRONTEND_USAGE, parseFrontendArgs, UsageError, type FrontendCliOptions } from './args.js';

export interface CliIo {
  stdout?: Writable & { isTTY?: boolean };
  stderr?: Writable;
  /** Aborting ends the traffic early (the summary is still printed). */
  signal?: AbortSignal;
  /** Install SIGINT/SIGTERM handlers that end the run early (default true). */
  handleSignals?: boolean;
}

/** The JSON summary line's shape (net modes). */
export type NetSummaryLine = { type: 'summary'; mode: string; features: string; protocolFeatures: string; bases: number[] | null } & TrafficResult;
/** The JSON summary line's shape (blk-verify). */
export type BlkSummaryLine = { type: 'summary'; mode: 'blk-verify'; features: string; protocolFeatures: string; bases: number[] | null } & BlkVerifySummary;

function fmtRate(pps: number): string {
  if (pps >= 1e6) return `${(pps / 1e6).toFixed(2)} Mpps`;
  if (pps >= 1e3) return `${(pps / 1e3).toFixed(1)} kpps`;
  return `${pps.toFixed(0)} pps`;
}

/** Runs the front-end CLI with `argv` (the arguments after `frontend`). */
export async function runFrontendCli(argv: readonly string[], io: CliIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  let opts: FrontendCliOptions;
  try {
    opts = parseFrontendArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message === FRONTEND_USAGE) {
        stdout.write(`${FRONTEND_USAGE}\n`);
        return 0;
      }
      stderr.write(`vhost-ts frontend: ${e.message}\n(see vhost-ts frontend --help)\n`);
      return e.exitCode;
    }
    throw e;
  }
  const tty = opts.output === 'auto' && stdout.isTTY === true;
  const json = opts.output === 'json' || (opts.output === 'auto' && !tty);
  const write = (obj: unknown): void => {
    stdout.write(`${JSON.stringify(obj)}\n`);
  };

  if (opts.cpus.length > 0 && opts.workers === 0) {
    try {
      native.setAffinity(opts.cpus);
    } catch (e) {
      stderr.write(`vhost-ts frontend: --cpu=${opts.cpus.join(',')}: ${(e as Error).message}\n`);
      return 2;
    }
  }

  let device: FrontendDevice | null = null;
  let traffic: NetTraffic | ParallelNetTraffic | null = null;
  let stopRequested = false;
  const requestStop = (): void => {
    stopRequested = true;
    traffic?.stop();
  };
  const onSignal = (): void => requestStop();
  const handleSignals = io.handleSignals ?? true;
  if (handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  io.signal?.addEventListener('abort', requestStop, { once: true });
  try {
    const common = {
      socketPath: opts.socketPath,
      server: opts.server,
      packed: opts.packed,
      queueSize: opts.queueSize,
      memory: opts.memory,
      layout: opts.layout,
      regions: opts.regions,
      indirect: opts.indirect,
      eventIdx: opts.eventIdx,
      timeoutMs: opts.timeoutMs,
      ...(opts.trace ? { trace: (line: string) => stderr.write(`${line}\n`) } : {}),
    };
    if (opts.mode === 'blk-verify') {
      device = await openBlkDevice({ ...common, queues: opts.queues });
      const drv = new BlkDriver(device, { depth: opts.depth, maxRequestBytes: Math.max(opts.size, 4096), timeoutMs: opts.timeoutMs });
      const started = performance.now();
      const res = await blkVerify(drv, {
        requestBytes: opts.size,
        sectors: opts.blkSectors,
        seconds: stopRequested ? 0 : opts.seconds,
        onPass: (s) => {
          const t = (performance.now() - started) / 1000;
          if (json && opts.output !== 'quiet') write({ type: 'progress', t, passes: s.passes, writes: s.writes, reads: s.reads, mismatches: s.mismatches, errors: s.errors });
          else if (tty) stdout.write(`\r[${t.toFixed(1)}s] pass ${s.passes}: ${s.writes} writes, ${s.reads} reads, ${s.mismatches} mismatches, ${s.errors} errors `);
        },
      });
      if (tty) stdout.write('\n');
      const stop = await device.close();
      device = null;
      const line: BlkSummaryLine = {
        type: 'summary', mode: 'blk-verify', features: '0x' + drv.device.features.toString(16),
        protocolFeatures: '0x' + drv.device.protocolFeatures.toString(16), bases: stop?.bases ?? null, ...res,
      };
      write(line);
      const ok = res.mismatches === 0 && res.errors === 0 && res.writeZeroes !== 'read-back-mismatch';
      if (!ok) stderr.write('vhost-ts frontend: blk verification FAILED\n');
      return ok ? 0 : 1;
    }

    device = await openNetDevice({ ...common, queuePairs: opts.queues, mrgRxbuf: opts.mrgRxbuf });
    const trafficOptions: NetTrafficOptions = {
      mode: opts.mode,
      frameSize: opts.size,
      rate: opts.rate,
      burst: opts.burst,
      ...(opts.window !== undefined ? { window: opts.window } : {}),
      poll: opts.poll,
      ...(opts.spinUs !== undefined ? { spinUs: opts.spinUs } : {}),
      verify: opts.verify,
      indirectTx: opts.indirect,
    };
    traffic = opts.workers > 0
      ? new ParallelNetTraffic(device, trafficOptions, { workers: opts.workers, cpus: opts.cpus })
      : new NetTraffic(device, trafficOptions);
    if (stopRequested) traffic.stop();
    const t = traffic;
    let last: TrafficProgress = { t: 0, queues: t.progress().queues.map((q) => ({ q: q.q, sent: 0, received: 0 })) };
    const onTick = (now: TrafficProgress): void => {
      const dt = now.t - last.t;
      if (dt <= 0) return;
      const queues = now.queues.map((q, i) => ({
        queue: q.q,
        txPps: Math.round((q.sent - last.queues[i]!.sent) / dt),
        rxPps: Math.round((q.received - last.queues[i]!.received) / dt),
      }));
      const txPps = queues.reduce((a, q) => a + q.txPps, 0);
      const rxPps = queues.reduce((a, q) => a + q.rxPps, 0);
      if (json) write({ type: 'progress', t: Number(now.t.toFixed(3)), txPps, rxPps, queues });
      else if (tty) {
        const per = queues.map((q) => `q${q.queue} tx ${fmtRate(q.txPps)} rx ${fmtRate(q.rxPps)}`).join(' | ');
        stdout.write(`\r[${now.t.toFixed(1)}s] ${per}   `);
      }
      last = now;
    };
    const res = await t.run(opts.seconds, opts.mode === 'rx' ? 0 : opts.drainMs, opts.output === 'quiet' ? undefined : { intervalMs: opts.intervalMs, onTick });
    if (tty) stdout.write('\n');
    const features = '0x' + device.features.toString(16);
    const protocolFeatures = '0x' + device.protocolFeatures.toString(16);
    const dev = device;
    const stop = await dev.close();
    device = null;
    if (stop === null && dev.lastStopError) stderr.write(`vhost-ts frontend: stop sequence failed: ${dev.lastStopError.message}\n`);
    const line: NetSummaryLine = { type: 'summary', mode: opts.mode, features, protocolFeatures, bases: stop?.bases ?? null, ...res };
    write(line);
    return res.bad === 0 && res.duplicated === 0 ? 0 : 1;
  } catch (e) {
    stderr.write(`vhost-ts frontend: ${(e as Error).message}\n`);
    return 1;
  } finally {
    if (handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    io.signal?.removeEventListener('abort', requestStop);
    if (device) await device.close({ graceful: false });
  }
}
