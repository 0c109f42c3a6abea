/**
 * A well-behaved front-end running alongside an attack: our front-end
 * (@vhost-ts/frontend) as a virtio-net device doing loop traffic (TX frames
 * come back on RX) through the back-end's loopback module, in its own child
 * process (fixtures/frontend.mjs) so a busy fuzzer in the test process cannot
 * starve it. Tests check that its traffic keeps flowing while other
 * connections misbehave. The same child is the front-end that fault tests kill.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { TrafficResult } from '@vhost-ts/frontend';
import { fixturePath } from './backend-process.js';

export interface FrontendChildOptions {
  /** Frames per second (default 2000: a witness, not a load generator). */
  rate?: number;
  frameSize?: number;
  queueSize?: number;
  packed?: boolean;
  /** Guest memory bytes (default 8 MiB). */
  memory?: number;
}

export interface Witness {
  readonly child: ChildProcess;
  /** Frames received so far (last progress report, every 100 ms). */
  received(): number;
  /** Waits until at least `frames` more frames came back within `timeoutMs`; false when traffic stalled. */
  flows(frames?: number, timeoutMs?: number): Promise<boolean>;
  /** Stops traffic, closes the device, waits for the child to exit; returns the traffic summary. */
  close(): Promise<TrafficResult>;
  /** SIGKILLs the child (a front-end dying mid-traffic) and waits for its exit. */
  kill(): Promise<void>;
}

interface ChildMessage {
  event: 'ready' | 'progress' | 'result' | 'error';
  sent?: number;
  received?: number;
  result?: TrafficResult;
  message?: string;
}

/** Starts the front-end child and resolves once its device runs traffic. */
export async function startWitness(socketPath: string, options: FrontendChildOptions = {}): Promise<Witness> {
  const child = fork(fixturePath('frontend.mjs'), [JSON.stringify({ socketPath, ...options })], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  let received = 0;
  let result: TrafficResult | null = null;
  let error: string | null = null;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let exitedYet = false;
  void exited.then(() => {
    exitedYet = true;
  });
  const resultWaiters: Array<() => void> = [];
  child.on('message', (m: ChildMessage) => {
    if (m.event === 'progress') received = m.received ?? received;
    else if (m.event === 'result') {
      result = m.result ?? null;
      for (const w of resultWaiters.splice(0)) w();
    } else if (m.event === 'error') error = m.message ?? 'error';
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`front-end child did not start within 20 s; stderr:\n${stderr}`));
    }, 20_000);
    child.on('message', (m: ChildMessage) => {
      if (m.event === 'ready') {
        clearTimeout(timer);
        resolve();
      } else if (m.event === 'error') {
        clearTimeout(timer);
        reject(new Error(`front-end child failed: ${m.message}`));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`front-end child exited (code ${code}) during start; ${error ?? ''}\n${stderr}`));
    });
  });
  return {
    child,
    received: () => received,
    async flows(frames = 50, timeoutMs = 5000) {
      const start = received;
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        if (received >= start + frames) return true;
        if (exitedYet) return false;
        await new Promise((r) => setTimeout(r, 10));
      }
      return false;
    },
    async close() {
      if (exitedYet) throw new Error(`front-end child already exited; ${error ?? ''}\n${stderr}`);
      const got = new Promise<void>((r) => resultWaiters.push(r));
      child.send({ cmd: 'stop' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await Promise.race([got, exited]);
      await exited;
      clearTimeout(timer);
      if (result === null) throw new Error(`front-end child gave no result; ${error ?? ''}\n${stderr}`);
      return result;
    },
    async kill() {
      if (!exitedYet) child.kill('SIGKILL');
      await exited;
    },
  };
}
