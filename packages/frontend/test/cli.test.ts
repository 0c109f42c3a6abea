/**
 * runFrontendCli end to end against the scripted back-end over real unix
 * sockets (client and --server mode), output formats and exit codes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { runFrontendCli } from '@vhost-ts/frontend';
import { FakeBackend } from './support/fake-backend.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

function tmpSock(): string {
  const dir = mkdtempSync('/tmp/vts-fe-cli-');
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'vhost.sock');
}

function capture(tty = false): { out: PassThrough & { isTTY?: boolean }; err: PassThrough; text: () => string; errText: () => string } {
  const out = new PassThrough() as PassThrough & { isTTY?: boolean };
  if (tty) out.isTTY = true;
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d: Buffer) => (o += d.toString()));
  err.on('data', (d: Buffer) => (e += d.toString()));
  return { out, err, text: () => o, errText: () => e };
}

describe('runFrontendCli', () => {
  it('bad arguments: a clear message on stderr and exit code 2', async () => {
    const c = capture();
    expect(await runFrontendCli(['--mode=loop'], { stdout: c.out, stderr: c.err, handleSignals: false })).toBe(2);
    expect(c.errText()).toMatch(/--socket-path=PATH is required/);
    expect(await runFrontendCli(['--socket-path=/x', '--mode=loop', '--queues=0'], { stdout: c.out, stderr: c.err, handleSignals: false })).toBe(2);
  });

  it('--help prints the usage and exits 0', async () => {
    const c = capture();
    expect(await runFrontendCli(['--help'], { stdout: c.out, stderr: c.err, handleSignals: false })).toBe(0);
    expect(c.text()).toMatch(/usage: vhost-ts frontend/);
  });

  it('a back-end that is not there: exit code 1 with the reason', async () => {
    const c = capture();
    const code = await runFrontendCli(['--socket-path=/tmp/vts-no-such.sock', '--mode=tx', '--timeout-ms=50'], { stdout: c.out, stderr: c.err, handleSignals: false });
    expect(code).toBe(1);
    expect(c.errText()).toMatch(/cannot connect/);
  });

  it('loop against an echo back-end: JSON progress lines and a summary with sent/received/lost/duplicated/bad', async () => {
    const sock = tmpSock();
    const c = capture();
    const backendP = FakeBackend.listen(sock);
    const run = runFrontendCli(
      [`--socket-path=${sock}`, '--mode=loop', '--queues=2', '--seconds=1', '--interval-ms=100', '--size=128', '--drain-ms=3000'],
      { stdout: c.out, stderr: c.err, handleSignals: false },
    );
    const backend = await backendP;
    cleanup.push(() => backend.close());
    // Start echoing once the rings exist.
    const t = setInterval(() => {
      if (backend.vrings.size === 4 && [...backend.vrings.values()].every((v) => v.ring)) {
        clearInterval(t);
        backend.startData('echo');
      }
    }, 5);
    expect(await run).toBe(0);
    clearInterval(t);
    const lines = c.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = lines.filter((l) => l.type === 'progress');
    const summary = lines.find((l) => l.type === 'summary')!;
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]).toHaveProperty('queues');
    expect((progress[0]!.queues as unknown[]).length).toBe(2);
    expect(summary).toMatchObject({ mode: 'loop', lost: 0, duplicated: 0, bad: 0 });
    expect(summary.sent).toBeGreaterThan(0);
    expect(summary.received).toBe(summary.sent);
    expect(summary.bases).toHaveLength(4);
  });

  it('on a TTY: a progress line rewritten in place, then the JSON summary', async () => {
    const sock = tmpSock();
    const c = capture(true);
    const backendP = FakeBackend.listen(sock);
    const run = runFrontendCli([`--socket-path=${sock}`, '--mode=tx', '--seconds=0.5', '--interval-ms=100'], { stdout: c.out, stderr: c.err, handleSignals: false });
    const backend = await backendP;
    cleanup.push(() => backend.close());
    backend.startData('sink');
    expect(await run).toBe(0);
    expect(c.text()).toMatch(/\r\[0\.\ds\] q0 tx [\d.]+ [kM]?pps/);
    const last = c.text().trim().split('\n').pop()!;
    expect(JSON.parse(last)).toMatchObject({ type: 'summary', mode: 'tx' });
  });

  it('--server: listens, the back-end connects, traffic flows', async () => {
    const sock = tmpSock();
    const c = capture();
    const run = runFrontendCli([`--socket-path=${sock}`, '--server', '--mode=tx', '--seconds=0.3', '--quiet'], { stdout: c.out, stderr: c.err, handleSignals: false });
    const backend = await FakeBackend.connect(sock);
    cleanup.push(() => backend.close());
    backend.startData('sink');
    expect(await run).toBe(0);
    const lines = c.text().trim().split('\n');
    expect(lines).toHaveLength(1);
    const s = JSON.parse(lines[0]!) as { sent: number };
    expect(s.sent).toBeGreaterThan(0);
    expect(backend.txFrames).toBe(s.sent);
  });

  it('--server replaces a stale socket file but refuses a live one', async () => {
    const sock = tmpSock();
    native.close(native.unixListen(sock)); // leaves the socket file behind, nobody listening
    const c = capture();
    const run = runFrontendCli([`--socket-path=${sock}`, '--server', '--mode=tx', '--seconds=0.2', '--quiet'], { stdout: c.out, stderr: c.err, handleSignals: false });
    const backend = await FakeBackend.connect(sock);
    cleanup.push(() => backend.close());
    backend.startData('sink');
    expect(await run).toBe(0);
    const live = native.unixListen(sock);
    cleanup.push(() => native.close(live));
    const c2 = capture();
    expect(await runFrontendCli([`--socket-path=${sock}`, '--server', '--mode=tx', '--quiet'], { stdout: c2.out, stderr: c2.err, handleSignals: false })).toBe(1);
    expect(c2.errText()).toMatch(/already listening/);
  });

  it('an abort signal ends the run early and still prints the summary', async () => {
    const sock = tmpSock();
    const c = capture();
    const ac = new AbortController();
    const backendP = FakeBackend.listen(sock);
    const t0 = Date.now();
    const run = runFrontendCli([`--socket-path=${sock}`, '--mode=tx', '--seconds=30', '--quiet'], { stdout: c.out, stderr: c.err, handleSignals: false, signal: ac.signal });
    const backend = await backendP;
    cleanup.push(() => backend.close());
    backend.startData('sink');
    setTimeout(() => ac.abort(), 300);
    expect(await run).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(JSON.parse(c.text().trim())).toMatchObject({ type: 'summary' });
  });
});

describe('runFrontendCli --workers', () => {
  it('runs the data path in worker threads and still prints one summary', async () => {
    const dir = mkdtempSync('/tmp/vts-fe-cli-');
    const sock = path.join(dir, 'vhost.sock');
    const c = capture();
    const backendP = FakeBackend.listen(sock);
    const run = runFrontendCli([`--socket-path=${sock}`, '--mode=loop', '--queues=2', '--workers=2', '--seconds=0.4', '--interval-ms=100'], { stdout: c.out, stderr: c.err, handleSignals: false });
    const backend = await backendP;
    const t = setInterval(() => {
      if (backend.vrings.size === 4 && [...backend.vrings.values()].every((v) => v.ring)) {
        clearInterval(t);
        backend.startData('echo');
      }
    }, 5);
    try {
      expect(await run).toBe(0);
      const lines = c.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const summary = lines.find((l) => l.type === 'summary')!;
      expect(summary).toMatchObject({ lost: 0, bad: 0, duplicated: 0 });
      expect(summary.received).toBe(summary.sent);
      expect(lines.filter((l) => l.type === 'progress').length).toBeGreaterThan(0);
    } finally {
      clearInterval(t);
      backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
