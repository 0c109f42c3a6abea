/**
 * The `vhost-ts net` daemon as a child process, driven by our own TypeScript
 * front-end (no external program needed): the back-end program conventions
 * (--print-capabilities, usage errors, SIGTERM, --fd=N), traffic on every
 * queue pair, the JSON statistics lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { openNetDevice } from '@vhost-ts/frontend';
import { CLI_MAIN, NetDaemon } from '../packages/net/test/support/daemon.js';
import { echoCheck } from '../packages/net/test/support/echo-check.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'vts-net-cli-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the CLI to completion; resolves with exit code and output. */
function runCli(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, 'net', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vhost-ts net ${args.join(' ')} did not exit within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Waits for a child's exit; returns the code and how long it took. */
function exitOf(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode, ms: 0 });
      return;
    }
    const timer = setTimeout(() => reject(new Error(`no exit within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ms: performance.now() - t0 });
    });
  });
}

describe('vhost-ts net: back-end program conventions', () => {
  it('--print-capabilities prints {"type":"net","features":[...]} and exits 0', async () => {
    const r = await runCli(['--print-capabilities', '--queues=4', '--mtu=9000']);
    expect(r.code).toBe(0);
    const caps = JSON.parse(r.stdout) as { type: string; features: string[] };
    expect(caps.type).toBe('net');
    expect(caps.features).toEqual(expect.arrayContaining(['VERSION_1', 'MRG_RXBUF', 'MQ', 'MTU', 'RING_PACKED', 'EVENT_IDX', 'PROTOCOL_FEATURES', 'LOG_ALL']));
  });

  it('rejects bad command lines with status 2 and a message', async () => {
    const cases: [string[], RegExp][] = [
      [[], /--socket-path=PATH or --fd=N/],
      [['--socket-path=/tmp/x.sock', '--module=nosuch'], /unknown module 'nosuch'/],
      [['--socket-path=/tmp/x.sock', '--module=responder'], /ip=A\.B\.C\.D/],
      [['--socket-path=/tmp/x.sock', '--module=responder', '--module-opt', 'ip=10.0.0.300'], /bad IPv4/],
      [['--socket-path=/tmp/x.sock', '--module=switch', '--queues=2'], /one queue pair per port/],
      [['--socket-path=/tmp/x.sock', '--fd=3'], /exclusive/],
      [['--socket-path=/tmp/x.sock', '--queues=0'], /at least 1/],
      [['--socket-path=/tmp/x.sock', '--mac=zz'], /bad MAC/],
      [['--socket-path=/tmp/x.sock', '--stats-interval=-1'], /unexpected argument|seconds/],
      [['--bogus'], /unknown option/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args)));
    cases.forEach(([args, re], i) => {
      const r = results[i]!;
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(re);
    });
  });

  it('serves our front-end on every queue pair with no loss, prints JSON statistics lines, exits 0 on SIGTERM and removes its socket', async () => {
    const sock = path.join(tempDir(), 'net.sock');
    const d = await NetDaemon.start({ socketPaths: [sock], args: ['--queues=2', '--stats-interval=0.2'] });
    cleanups.push(() => d.close());
    const since = d.position;
    const dev = await openNetDevice({ socketPath: sock, queuePairs: 2, packed: false });
    cleanups.push(() => dev.close());
    const r = await echoCheck(dev, { rounds: 50, batch: 64, size: 512 });
    expect(r.bad).toBe(0);
    expect(r.received).toEqual(r.sent);
    await d.nextStats(d.position);
    const lines = d.statsLines(since);
    for (const q of ['q0', 'q1']) expect(lines.some((l) => (l.queues[q]?.['rx-pps'] ?? 0) > 0), q).toBe(true);
    expect(lines.every((l) => Object.values(l.queues).every((v) => v.drops === 0))).toBe(true);
    await dev.close();
    const { status, ms } = await d.stop();
    expect(status).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(2000);
    expect(existsSync(sock)).toBe(false);
  });

  it('--fd=N serves an inherited listening socket', async () => {
    const sock = path.join(tempDir(), 'inherited.sock');
    const fd = native.unixListen(sock);
    cleanups.push(() => native.close(fd));
    const child = spawn(process.execPath, [CLI_MAIN, 'net', '--fd=3', '--stats-interval=0'], { stdio: ['ignore', 'pipe', 'pipe', fd] });
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdout!.resume();
    const dev = await openNetDevice({ socketPath: sock, queuePairs: 1 });
    const r = await echoCheck(dev, { rounds: 10, batch: 32, size: 64 });
    await dev.close();
    expect(r.bad, stderr).toBe(0);
    expect(r.received).toEqual(r.sent);
    child.kill('SIGTERM');
    const exit = await exitOf(child, 5000);
    expect(exit, stderr).toMatchObject({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(2000);
  });
});
