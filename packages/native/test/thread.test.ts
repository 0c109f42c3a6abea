import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getAffinity, gettid, setAffinity } from '../src/index.js';
import { TestWorker, backTo, held, nativeError, type Held } from './util.js';

let baseline: Held;
let original: number[];
beforeAll(() => {
  baseline = held();
  original = getAffinity();
});
afterAll(async () => {
  setAffinity(original);
  expect(await backTo(baseline)).toEqual(baseline);
});

function kernelAffinity(tid: number): string {
  const m = /^Cpus_allowed_list:\s+(\S+)$/m.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'));
  return m?.[1] ?? '';
}

describe('threads', () => {
  it('gettid is the pid on the main thread and another id in a worker', async () => {
    expect(gettid()).toBe(process.pid);
    const w = new TestWorker('thread-worker.mjs', { cpu: original[original.length - 1] });
    const { tid } = await w.next<{ tid: number }>();
    expect(tid).toBeGreaterThan(0);
    expect(tid).not.toBe(process.pid);
    w.post('done');
    expect(await w.exit()).toBe(0);
  });

  it('setAffinity pins only the calling thread', async () => {
    expect(original.length).toBeGreaterThan(0);
    const cpu = original[original.length - 1] ?? 0;
    const w = new TestWorker('thread-worker.mjs', { cpu });
    const seen = await w.next<{ tid: number; before: number[]; after: number[] }>();
    expect(seen.before).toEqual(original);
    expect(seen.after).toEqual([cpu]);
    // The kernel agrees for the worker thread, and the main thread is untouched.
    expect(kernelAffinity(seen.tid)).toBe(String(cpu));
    expect(getAffinity()).toEqual(original);
    w.post('done');
    expect(await w.exit()).toBe(0);
  });

  it('pins and restores the main thread', () => {
    const cpu = original[0] ?? 0;
    setAffinity([cpu]);
    try {
      expect(getAffinity()).toEqual([cpu]);
      expect(kernelAffinity(process.pid)).toBe(String(cpu));
    } finally {
      setAffinity(original);
    }
    expect(getAffinity()).toEqual(original);
  });

  it('rejects bad CPU lists', () => {
    expect(() => setAffinity([])).toThrow(RangeError);
    expect(() => setAffinity([-1])).toThrow(RangeError);
    expect(() => setAffinity([1.5])).toThrow(RangeError);
    expect(() => setAffinity(['0' as unknown as number])).toThrow(RangeError);
    expect(() => setAffinity(0 as unknown as number[])).toThrow(TypeError);
    if (availableParallelism() < 1000) {
      // A CPU that does not exist: the kernel refuses, the affinity is unchanged.
      expect(nativeError(() => setAffinity([1023]))).toMatchObject({ code: 'EINVAL', syscall: 'sched_setaffinity' });
    }
    expect(getAffinity()).toEqual(original);
  });
});
