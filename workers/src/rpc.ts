/**
 * The comlink surface of a queue worker: rich control, never per packet.
 * Obtain it with `DeviceWorkers.remote(workerIndex)`; every call resolves
 * once the worker served it from its event loop (the runtime visits the loop
 * when poked, between bursts).
 */
export interface WorkerRpc {
  /** Module statistics (`QueueModule.stats()`), or an empty object. */
  moduleStats(): Record<string, number>;
  /** Passes options to `QueueModule.configure()`. Rejects when the module has none. */
  configure(options: Record<string, string>): Promise<void>;
  /** Calls `QueueModule.rpc[name](...args)`. */
  call(name: string, ...args: unknown[]): Promise<unknown>;
  /** The worker thread's CPU affinity (sched_getaffinity). */
  affinity(): number[];
  /** The worker thread's kernel thread id. */
  tid(): number;
}
