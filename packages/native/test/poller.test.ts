import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  POLL_READABLE,
  POLL_WRITABLE,
  Poller,
  close,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  gettid,
  socketpair,
} from '../src/index.js';
import { TestWorker, backTo, held, nativeError, within, type Held } from './util.js';

let baseline: Held;
beforeAll(() => {
  baseline = held();
});
afterAll(async () => {
  expect(await backTo(baseline)).toEqual(baseline);
});

describe('Poller on the main thread', () => {
  it('is woken by an eventfd written from a worker, drains it and passes the value', async () => {
    const efd = eventfdCreate();
    const calls: Array<{ events: number; value: number; tid: number }> = [];
    let woken!: () => void;
    const wake = new Promise<void>((resolve) => (woken = resolve));
    const poller = new Poller(
      efd,
      (events, value) => {
        calls.push({ events, value, tid: gettid() });
        woken();
      },
      true,
    );
    poller.start(POLL_READABLE);
    const writer = new TestWorker('eventfd-writer.mjs', { fd: efd, value: 5 });
    const report = await writer.next<{ ok: boolean; tid: number }>();
    expect(report.ok).toBe(true);
    expect(report.tid).not.toBe(process.pid);
    await within(wake, 5000, 'poller wake-up');
    expect(await writer.exit()).toBe(0);
    // Drained before the callback: one call with the value, the counter is empty.
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toEqual([{ events: POLL_READABLE, value: 5, tid: process.pid }]);
    expect(eventfdRead(efd)).toBe(0);
    poller.close();
    expect(poller.closed).toBe(true);
    poller.close(); // idempotent
    close(efd);
  });

  it('without drain passes 0 and leaves the counter to the callback', async () => {
    const efd = eventfdCreate(3);
    const seen = await new Promise<[number, number, number]>((resolve) => {
      const poller = new Poller(efd, (events, value) => {
        poller.stop();
        resolve([events, value, eventfdRead(efd)]);
        poller.close();
      });
      poller.start(POLL_READABLE);
    });
    expect(seen).toEqual([POLL_READABLE, 0, 3]);
    close(efd);
  });

  it('runs each callback in its own callback scope: its nextTicks and microtasks run before the next callback', async () => {
    // Two eventfds that are ready before the loop polls: both callbacks come
    // from one epoll_wait. A plain V8 Call would give cb0, cb1, tick0, tick1, ...
    const order: string[] = [];
    const fds = [eventfdCreate(1), eventfdCreate(1)];
    await new Promise<void>((resolve) => {
      let pending = fds.length;
      fds.forEach((fd, i) => {
        const poller = new Poller(
          fd,
          () => {
            poller.close();
            order.push(`cb${i}`);
            queueMicrotask(() => order.push(`micro${i}`));
            process.nextTick(() => order.push(`tick${i}`));
            if (--pending === 0) setImmediate(resolve);
          },
          true,
        );
        poller.start(POLL_READABLE);
      });
    });
    expect(order).toEqual(['cb0', 'tick0', 'micro0', 'cb1', 'tick1', 'micro1']);
    for (const fd of fds) close(fd);
  });

  it('reports writability and can be stopped and restarted', async () => {
    const [a, b] = socketpair();
    let count = 0;
    const poller = new Poller(a, (events) => {
      count++;
      expect(events & POLL_WRITABLE).toBe(POLL_WRITABLE);
      poller.stop();
    });
    poller.start(POLL_WRITABLE);
    await new Promise((r) => setTimeout(r, 30));
    expect(count).toBe(1); // stopped: no more calls although still writable
    poller.start(POLL_WRITABLE);
    await new Promise((r) => setTimeout(r, 30));
    expect(count).toBe(2);
    poller.close();
    close(a);
    close(b);
  });

  it('rejects bad use', () => {
    const efd = eventfdCreate();
    expect(() => (Poller as unknown as (fd: number, cb: () => void) => unknown)(efd, () => {})).toThrow(TypeError);
    expect(() => new Poller(efd, 'x' as unknown as () => void)).toThrow(TypeError);
    expect(() => new Poller(efd, () => {}, 1 as unknown as boolean)).toThrow(TypeError);
    const poller = new Poller(efd, () => {});
    expect(() => poller.start(16)).toThrow(RangeError);
    poller.start(POLL_READABLE);
    // One watcher per fd per loop.
    expect(nativeError(() => new Poller(efd, () => {}))).toMatchObject({ code: 'EEXIST', syscall: 'uv_poll_init' });
    poller.close();
    expect(nativeError(() => poller.start(POLL_READABLE))).toMatchObject({ code: 'ERR_POLLER_CLOSED' });
    poller.stop(); // no-op once closed
    const start = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(poller), 'start')?.value as (
      this: unknown,
      events: number,
    ) => void;
    expect(() => start.call({}, POLL_READABLE)).toThrow(TypeError);
    close(efd);
  });
});

describe('Poller inside a worker', () => {
  it('fires on the worker thread, not the main thread', async () => {
    const efd = eventfdCreate();
    const w = new TestWorker('poller-worker.mjs', { fd: efd, mode: 'echo' });
    const { tid } = await w.next<{ ready: boolean; tid: number }>();
    eventfdWrite(efd, 11);
    expect(await w.next()).toEqual({ events: POLL_READABLE, value: 11, tid });
    expect(tid).not.toBe(process.pid);
    w.post('stop');
    expect(await w.exit()).toBe(0);
    close(efd);
  });

  it('is closed when the worker is terminated: terminate() resolves, the worker loop is gone', async () => {
    const before = held();
    const efd = eventfdCreate();
    const w = new TestWorker('poller-worker.mjs', { fd: efd, mode: 'wait' });
    expect(await w.next()).toMatchObject({ ready: true });
    expect(held().fds).toBeGreaterThan(before.fds + 1); // the worker's loop has fds of its own
    await within(w.worker.terminate(), 5000, 'worker.terminate()');
    await w.exit();
    close(efd);
    expect(await backTo(before)).toEqual(before);
  });

  it('is closed when the worker calls process.exit() from the poller callback', async () => {
    const before = held();
    const efd = eventfdCreate();
    const w = new TestWorker('poller-worker.mjs', { fd: efd, mode: 'exit-in-cb' });
    await w.next();
    eventfdWrite(efd, 1);
    expect(await w.exit()).toBe(0);
    close(efd);
    expect(await backTo(before)).toEqual(before);
  });

  it('a stopped poller that was never closed does not keep the worker alive and is closed at exit', async () => {
    const efd = eventfdCreate();
    const w = new TestWorker('poller-worker.mjs', { fd: efd, mode: 'stopped' });
    expect(await w.next()).toMatchObject({ ready: true, closed: false });
    expect(await w.exit()).toBe(0);
    close(efd);
  });

  it('a poller closed right before process.exit() (close still pending) tears down cleanly', async () => {
    const efd = eventfdCreate();
    const w = new TestWorker('poller-worker.mjs', { fd: efd, mode: 'close-exit' });
    expect(await w.exit()).toBe(0);
    close(efd);
  });

  it('survives many workers with open pollers being terminated', async () => {
    const before = held();
    const efd = eventfdCreate();
    for (let round = 0; round < 3; round++) {
      const workers = Array.from({ length: 4 }, () => new TestWorker('poller-worker.mjs', { fd: efd, mode: 'wait' }));
      await Promise.all(workers.map((w) => w.next()));
      await within(Promise.all(workers.map((w) => w.worker.terminate())), 10_000, 'terminate all');
    }
    close(efd);
    expect(await backTo(before)).toEqual(before);
  });
});
