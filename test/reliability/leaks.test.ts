/**
 * The leak accounting helper (test/support/leaks.ts) itself: every kind of
 * leak it claims to see is seen and named, in this process and in a child by
 * pid, and a clean state passes.
 */
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { native, POLL_READABLE } from '@vhost-ts/native';
import { assertBackToBaseline, compareToBaseline, ResourceLeakError, settledSnapshot, snapshot } from '../support/leaks.js';

describe('leak accounting', () => {
  it('names a leaked eventfd, a leaked memfd mapping, a leaked native mapping, a running worker thread and a started poller; passes once they are released', async () => {
    const base = await settledSnapshot();
    const efd = native.eventfdCreate(0);
    const mfd = native.memfdCreate('leak-probe');
    native.ftruncate(mfd, 1 << 20);
    let sab: SharedArrayBuffer | null = native.mmap(mfd, 0, 1 << 20);
    const poller = new native.Poller(efd, () => undefined);
    poller.start(POLL_READABLE);
    const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
    await new Promise((r) => worker.once('online', r));
    await new Promise((r) => setImmediate(r)); // libuv registers the poller on the next loop turn
    const problems = compareToBaseline(base, snapshot());
    const text = problems.join('\n');
    expect(text).toMatch(/fds: .*anon_inode:\[eventfd\]/);
    expect(text).toMatch(/fds: .*\/memfd:leak-probe/);
    expect(text).toMatch(/memfd mappings: .*\/memfd:leak-probe/);
    expect(text).toMatch(/native live mappings: 1 \(baseline 0\)/);
    expect(text).toMatch(/threads: .*a worker thread did not exit/);
    expect(text).toMatch(new RegExp(`event-loop watches: .*\\b${efd}\\b`));
    await expect(assertBackToBaseline(base, { timeoutMs: 200 })).rejects.toBeInstanceOf(ResourceLeakError);

    poller.close();
    native.close(efd);
    native.release(sab);
    sab = null; // the unmap happens when the GC drops the last reference
    native.close(mfd);
    await worker.terminate();
    await assertBackToBaseline(base, { timeoutMs: 5000 });
  });

  it('reads a child process by pid (fds, mappings, threads) and takes the child native counters it is given', async () => {
    const code =
      "const { Worker } = require('node:worker_threads'); process.on('message', (m) => { if (m === 'leak') { globalThis.w = new Worker('setInterval(() => {}, 1000)', { eval: true }); globalThis.w.once('online', () => process.send('ok')); } else if (m === 'free') { globalThis.w.terminate().then(() => process.send('ok')); } }); process.send('ready');";
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    const next = (): Promise<unknown> => new Promise((r) => child.once('message', r));
    try {
      await next();
      // Warm-up: one leak/free cycle first (the child's loop registers some handles lazily).
      child.send('leak');
      await next();
      child.send('free');
      await next();
      await new Promise((r) => setTimeout(r, 200));
      const base = snapshot({ pid: child.pid!, native: { live: 0, released: 0 } });
      expect(base.pid).toBe(child.pid);
      expect(base.fds.size).toBeGreaterThan(2);
      expect(base.threads).toBeGreaterThan(1);
      child.send('leak');
      await next();
      const leaked = snapshot({ pid: child.pid!, native: { live: 2, released: 0 } });
      const problems = compareToBaseline(base, leaked).join('\n');
      expect(problems).toMatch(/threads: /);
      expect(problems).toMatch(/native live mappings: 2 \(baseline 0\)/);
      child.send('free');
      await next();
      await assertBackToBaseline(base, { timeoutMs: 5000, probe: async () => snapshot({ pid: child.pid!, native: { live: 0, released: 0 } }) });
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
