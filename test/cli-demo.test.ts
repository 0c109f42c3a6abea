import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const main = path.resolve(import.meta.dirname, '../packages/cli/dist/main.js');

function run(args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('vhost-ts CLI', () => {
  it('lists its commands and refuses an unknown one with status 2', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    for (const c of ['net', 'blk', 'frontend', 'demo']) expect(help.stdout).toContain(`  ${c}`);
    const bad = run(['frobnicate']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("unknown command 'frobnicate'");
  });

  it('answers a bad demo option with a usage error and status 2', () => {
    const r = run(['demo', '--queues=0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--queues' must be at least 1/);
  });

  it('demo: the echo back-end returns every frame the built-in front-end sends, on both queue pairs', () => {
    const r = run(['demo', '--seconds=1', '--queues=2', '--stats-interval=1']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').find((l) => l.includes('"demo-summary"')) ?? '{}');
    expect(summary.ok).toBe(true);
    expect(summary.received).toBeGreaterThan(1000);
    expect(summary.received).toBe(summary.sent);
    expect(summary.lost).toBe(0);
    expect(summary.bad).toBe(0);
    expect(r.stdout).toMatch(/per queue pair: q0 [1-9]\d*\/\d+, q1 [1-9]\d*\/\d+/);
  });
});
