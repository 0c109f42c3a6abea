/**
 * The net data path in worker threads: queue pairs are dealt round-robin to
 * `workers` worker threads; each rebuilds its vrings' driver-side rings over
 * the same guest memory (SharedArrayBuffers from the mappings), watches its
 * call eventfds with its own Poller and runs the same traffic loop
 * (NetTraffic) on its pairs. The main thread keeps the control plane, merges
 * progress and results. Frames are expected back on the pair that sent them
 * (true for DPDK io/macswap and echo back-ends); any that are not are counted
 * as `crossPair` and their stream's accounting is incomplete.
 */
import { Worker } from 'node:worker_threads';
import type { FrontendDevice } from '../device.js';
import { summarize, type QueueCounterValues, type StreamStats } from './accounting.js';
import { netBufferStrides, type NetTrafficOptions, type TrafficProgress, type TrafficResult } from './traffic.js';

/** What a worker is given (structured clone; SABs are shared, fds are process-wide numbers). */
export interface NetWorkerInit {
  regions: { gpa: number; size: number; sab: SharedArrayBuffer; sabOffset: number }[];
  features: string;
  queuePairs: number;
  pairs: number[];
  vrings: {
    index: number;
    kind: 'split' | 'packed';
    size: number;
    descGpa: number;
    driverGpa: number;
    deviceGpa: number;
    eventIdx: boolean;
    inOrder: boolean;
    indirectPool: { gpa: number; maxEntries: number } | null;
    kickFd: number;
    callFd: number;
  }[];
  /** `${q}:tx` / `${q}:rx` -> pool GPA. */
  pools: Record<string, number>;
  options: NetTrafficOptions;
  seconds: number;
  drainMs: number;
  intervalMs: number;
  cpus: number[];
}

/** One pair's outcome as a worker reports it. */
export interface NetPairOutcome {
  q: number;
  counters: QueueCounterValues;
  stream: StreamStats;
}

export type NetWorkerMessage =
  | { type: 'progress'; queues: { q: number; sent: number; received: number }[] }
  | { type: 'result'; pairs: NetPairOutcome[]; seconds: number }
  | { type: 'error'; message: string };

export interface ParallelOptions {
  /** Worker threads (at most one per queue pair). */
  workers: number;
  /** CPUs to pin the workers to, dealt round-robin (empty: no pinning). */
  cpus?: readonly number[];
}

/** NetTraffic's interface, with the pairs spread over worker threads. */
export class ParallelNetTraffic {
  readonly device: FrontendDevice;
  readonly options: NetTrafficOptions;
  readonly workerCount: number;
  private readonly cpus: readonly number[];
  private readonly snapshot = new Map<number, { q: number; sent: number; received: number }>();
  private readonly workers: Worker[] = [];
  private startTime = 0;
  private stopRequested = false;
  /** Per-pair outcomes of the last run (counters include macSwapped, merged, ...). */
  outcomes: NetPairOutcome[] = [];

  constructor(device: FrontendDevice, options: NetTrafficOptions, parallel: ParallelOptions) {
    this.device = device;
    this.options = options;
    const pairs = device.vrings.length >> 1;
    if (pairs < 1 || device.vrings.length % 2 !== 0) throw new RangeError('a net device needs an even number of vrings');
    if (!Number.isInteger(parallel.workers) || parallel.workers < 1) throw new RangeError(`workers must be >= 1, got ${parallel.workers}`);
    this.workerCount = Math.min(parallel.workers, pairs);
    this.cpus = parallel.cpus ?? [];
    for (let q = 0; q < pairs; q++) this.snapshot.set(q, { q, sent: 0, received: 0 });
  }

  stop(): void {
    this.stopRequested = true;
    for (const w of this.workers) w.postMessage('stop');
  }

  progress(): TrafficProgress {
    return { t: this.startTime === 0 ? 0 : (performance.now() - this.startTime) / 1000, queues: [...this.snapshot.values()] };
  }

  async run(seconds: number, drainMs = 500, tick?: { intervalMs: number; onTick: (p: TrafficProgress) => void }): Promise<TrafficResult> {
    const dev = this.device;
    const pairs = dev.vrings.length >> 1;
    const strides = netBufferStrides(dev.features, this.options.frameSize, this.options.rxBufferSize);
    const regions = dev.memory.memory.regions.map((r) => ({ gpa: r.gpa, size: r.size, sab: r.sab, sabOffset: r.sabOffset }));
    const inits: NetWorkerInit[] = [];
    for (let w = 0; w < this.workerCount; w++) {
      const mine: number[] = [];
      for (let q = w; q < pairs; q += this.workerCount) mine.push(q);
      const pools: Record<string, number> = {};
      const vrings: NetWorkerInit['vrings'] = [];
      for (const q of mine) {
        for (const i of [2 * q, 2 * q + 1]) {
          const v = dev.vrings[i]!;
          vrings.push({
            index: i, kind: v.kind, size: v.size, descGpa: v.descGpa, driverGpa: v.driverGpa, deviceGpa: v.deviceGpa,
            eventIdx: v.eventIdx, inOrder: v.inOrder, indirectPool: v.indirectPool, kickFd: v.kickFd, callFd: v.callFd,
          });
        }
        pools[`${q}:tx`] = dev.memory.allocator.alloc(dev.vrings[2 * q + 1]!.size * strides.tx, 4096).gpa;
        pools[`${q}:rx`] = dev.memory.allocator.alloc(dev.vrings[2 * q]!.size * strides.rx, 4096).gpa;
      }
      const cpu = this.cpus.length > 0 ? [this.cpus[w % this.cpus.length]!] : [];
      inits.push({
        regions, features: dev.features.toString(), queuePairs: pairs, pairs: mine, vrings, pools, options: this.options,
        seconds: this.stopRequested ? 0 : seconds, drainMs, intervalMs: tick?.intervalMs ?? 0, cpus: cpu,
      });
    }
    this.startTime = performance.now();
    const ticker = tick ? setInterval(() => tick.onTick(this.progress()), tick.intervalMs) : undefined;
    try {
      const results = await Promise.all(inits.map((init) => this.runWorker(init)));
      this.outcomes = results.flatMap((r) => r.pairs).sort((a, b) => a.q - b.q);
      const seconds_ = Math.max(...results.map((r) => r.seconds));
      const expectOurs = this.options.mode === 'loop' && (this.options.verify ?? true);
      const sum = summarize(this.outcomes.map((o) => o.counters), this.outcomes.map((o) => o.stream), expectOurs);
      let kicks = 0;
      let calls = 0;
      for (const o of this.outcomes) {
        kicks += o.counters.kicks;
        calls += o.counters.calls;
      }
      return { ...sum, seconds: seconds_, txPps: seconds_ > 0 ? sum.sent / seconds_ : 0, rxPps: seconds_ > 0 ? sum.received / seconds_ : 0, kicks, calls };
    } finally {
      clearInterval(ticker);
    }
  }

  private runWorker(init: NetWorkerInit): Promise<{ pairs: NetPairOutcome[]; seconds: number }> {
    return new Promise((resolve, reject) => {
      const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
      this.workers.push(w);
      let done = false;
      w.on('message', (m: NetWorkerMessage) => {
        if (m.type === 'progress') for (const q of m.queues) this.snapshot.set(q.q, q);
        else if (m.type === 'result') {
          done = true;
          for (const p of m.pairs) this.snapshot.set(p.q, { q: p.q, sent: p.counters.sent, received: p.counters.received });
          resolve({ pairs: m.pairs, seconds: m.seconds });
        } else if (m.type === 'error') {
          done = true;
          reject(new Error(`traffic worker: ${m.message}`));
        }
      });
      w.on('error', (e) => {
        done = true;
        reject(e);
      });
      w.on('exit', (code) => {
        this.workers.splice(this.workers.indexOf(w), 1);
        if (!done) reject(new Error(`traffic worker exited with code ${code} before reporting`));
      });
    });
  }
}
