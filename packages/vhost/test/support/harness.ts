/**
 * Test harness around a VhostUserDriver: a temp socket path, a logger that
 * records lines, callbacks that record events (and can be made slow), and
 * helpers to wait for events and for resources to return to a baseline.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native } from '@vhost-ts/native';
import { VhostUserDriver, type Logger, type VhostCallbacks, type VhostDevice, type VhostUserDriverOptions } from '@vhost-ts/vhost';
import { countResources, describeFds, eventually } from '../../../../test/support/leaks.js';
import { sleep } from './frontend.js';

// `eventually` calls globalThis.gc when present: expose it in this forked test process.
if ((globalThis as { gc?: unknown }).gc === undefined) {
  v8.setFlagsFromString('--expose-gc');
  (globalThis as { gc?: unknown }).gc = vm.runInNewContext('gc');
}

/** A recorded callback invocation. */
export interface DriverEvent {
  name: string;
  deviceId: number;
  args: unknown[];
}

/** A logger that keeps every line (and echoes with VHOST_TS_TEST_LOG=1). */
export class RecordingLogger implements Logger {
  readonly lines: string[] = [];
  private add(level: string, m: string): void {
    this.lines.push(`${level} ${m}`);
    if (process.env.VHOST_TS_TEST_LOG === '1') process.stderr.write(`[test-log] ${level} ${m}\n`);
  }
  debug(m: string): void {
    this.add('debug', m);
  }
  info(m: string): void {
    this.add('info', m);
  }
  warn(m: string): void {
    this.add('warn', m);
  }
  error(m: string): void {
    this.add('error', m);
  }
  /** True when some line matches. */
  has(pattern: RegExp): boolean {
    return this.lines.some((l) => pattern.test(l));
  }
  /** Waits for a line matching `pattern` among the lines from index `from` on. */
  async waitFor(pattern: RegExp, timeoutMs = 3000, from = 0): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const line = this.lines.slice(from).find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (Date.now() > end) throw new Error(`no log line matching ${pattern} within ${timeoutMs} ms; lines:\n${this.lines.join('\n')}`);
      await sleep(5);
    }
  }
}

export interface Harness {
  driver: VhostUserDriver;
  socketPath: string;
  dir: string;
  logger: RecordingLogger;
  events: DriverEvent[];
  /** Extra behaviour per callback (e.g. a delay); called after recording. */
  hooks: Partial<Record<keyof VhostCallbacks, (...args: unknown[]) => unknown>>;
  /** Events named `name` so far. */
  count(name: string): number;
  /** Waits until `count(name) >= n`. */
  waitEvent(name: string, n?: number, timeoutMs?: number): Promise<DriverEvent>;
  /** The device of the latest newConnection. */
  lastDevice(): VhostDevice;
  stop(): Promise<void>;
}

const CALLBACK_NAMES: Array<keyof VhostCallbacks> = [
  'newConnection',
  'destroyConnection',
  'newDevice',
  'destroyDevice',
  'vringStateChanged',
  'featuresChanged',
  'memoryChanging',
  'memoryChanged',
  'sendRarp',
  'mtuChanged',
  'statusChanged',
];

/** Starts a driver on a fresh temp socket with recording callbacks. */
export async function startHarness(options: Partial<VhostUserDriverOptions> = {}): Promise<Harness> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-test-'));
  const socketPath = options.path ?? path.join(dir, 'vhost.sock');
  const logger = new RecordingLogger();
  const events: DriverEvent[] = [];
  const hooks: Harness['hooks'] = {};
  let last: VhostDevice | null = null;
  const callbacks: VhostCallbacks = {};
  for (const name of CALLBACK_NAMES) {
    (callbacks as Record<string, unknown>)[name] = (dev: VhostDevice, ...args: unknown[]) => {
      events.push({ name, deviceId: dev.id, args });
      if (name === 'newConnection') last = dev;
      return hooks[name]?.(dev, ...args);
    };
  }
  const driver = new VhostUserDriver({ maxQueues: 4, callbackTimeoutMs: 2000, ...options, path: options.fd === undefined ? socketPath : undefined, logger, callbacks } as VhostUserDriverOptions);
  await driver.start();
  const count = (name: string) => events.filter((e) => e.name === name).length;
  return {
    driver,
    socketPath,
    dir,
    logger,
    events,
    hooks,
    count,
    async waitEvent(name, n = 1, timeoutMs = 3000) {
      const end = Date.now() + timeoutMs;
      while (count(name) < n) {
        if (Date.now() > end) throw new Error(`no ${n}x ${name} within ${timeoutMs} ms; events: ${events.map((e) => e.name).join(', ')}\n${logger.lines.join('\n')}`);
        await sleep(2);
      }
      return events.filter((e) => e.name === name)[n - 1]!;
    },
    lastDevice() {
      if (last === null) throw new Error('no connection yet');
      return last;
    },
    async stop() {
      await driver.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * What the process holds: open fds, all /proc mappings, mappings of memfds
 * (guest memory, logs, inflight areas show as `/memfd:...`), and the native
 * layer's live and released-but-not-yet-unmapped mappings.
 */
export interface Baseline {
  fds: number;
  mappings: number;
  memfdMappings: number;
  live: number;
  released: number;
  /** The /proc/self/maps lines without addresses (for a readable diff on failure). */
  maps: string[];
}

export function baseline(): Baseline {
  const r = countResources();
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.length > 0);
  const memfdMappings = maps.filter((l) => l.includes('/memfd:')).length;
  return { fds: r.fds, mappings: r.mappings, memfdMappings, live: native.liveMappings(), released: native.releasedMappings(), maps };
}

/** A baseline taken after the GC has unmapped what earlier tests released. */
export async function settledBaseline(): Promise<Baseline> {
  await eventually(() => native.releasedMappings() === 0, 3000);
  return baseline();
}

function mapsDiff(before: readonly string[], after: readonly string[]): string {
  const count = (ls: readonly string[]) => {
    const m = new Map<string, number>();
    for (const l of ls) {
      const key = l.replace(/^\S+\s+/, '').replace(/^(\S+)\s+\S+/, '$1'); // drop range and offset
      m.set(key, (m.get(key) ?? 0) + 1);
    }
    return m;
  };
  const a = count(before);
  const b = count(after);
  const out: string[] = [];
  for (const [k, n] of b) if (n !== (a.get(k) ?? 0)) out.push(`${n - (a.get(k) ?? 0) > 0 ? '+' : ''}${n - (a.get(k) ?? 0)} ${k}`);
  for (const [k, n] of a) if (!b.has(k)) out.push(`-${n} ${k}`);
  return out.join('\n');
}

/**
 * V8 grows its heap in anonymous mappings at unpredictable times (tens at
 * once): the total may rise by this much without a leak. Our own mappings are
 * counted exactly: memfd-backed lines (regions, logs, inflight areas) and the
 * native layer's live and released (zero-overlay) mappings.
 */
const HEAP_SLACK = 64;

/**
 * Waits until fds, mappings and native live mappings are back to `base`
 * (mappings are unmapped by the GC after release()). Throws with details if not.
 */
export async function expectBackToBaseline(base: Baseline, timeoutMs = 5000): Promise<void> {
  const ok = await eventually(() => {
    const now = baseline();
    return (
      now.fds === base.fds &&
      now.live === base.live &&
      now.released <= base.released &&
      now.memfdMappings === base.memfdMappings &&
      now.mappings <= base.mappings + HEAP_SLACK
    );
  }, timeoutMs);
  if (!ok) {
    const now = baseline();
    const { maps: _a, ...nowCounts } = now;
    const { maps: _b, ...baseCounts } = base;
    throw new Error(
      `resources not back to baseline: now ${JSON.stringify(nowCounts)} vs ${JSON.stringify(baseCounts)}\nfds:\n${describeFds().join('\n')}\nmappings diff:\n${mapsDiff(base.maps, now.maps)}`,
    );
  }
}
