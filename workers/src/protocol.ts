/**
 * Messages between the main thread and a queue worker (structured-clone
 * payloads). Control requests that must be fast (pause, stop, exit) go through
 * the control block; these messages carry what cannot live in Int32 words
 * (SharedArrayBuffers, options) and are applied by the worker on REQ_APPLY.
 */
import type { MessagePort } from 'node:worker_threads';

/** Ring layout kind. */
export type RingKind = 'split' | 'packed';

/** One guest memory region as handed to a worker (same shape as virtio's GuestRegionInit). */
export interface RegionSpec {
  /** Guest-physical address of the region's first byte. */
  gpa: number;
  /** Bytes. */
  size: number;
  /** The mapping (native mmap or a plain SharedArrayBuffer in tests). */
  sab: SharedArrayBuffer;
  /** Byte offset of `gpa` inside `sab` (default 0). */
  sabOffset?: number;
}

/** The dirty-page log (SET_LOG_BASE): a bitmap SAB, one bit per 4 KiB page from GPA 0. */
export interface LogSpec {
  sab: SharedArrayBuffer;
  offset?: number;
  size?: number;
}

/** Everything a worker needs to serve one vring. */
export interface RingSpec {
  /** vring index in the device (net: RX 2i, TX 2i+1). */
  index: number;
  /** Default 'split'. */
  kind?: RingKind;
  /** Queue size (SET_VRING_NUM). */
  size: number;
  /** Descriptor table GPA. */
  descGpa: number;
  /** Split: available ring GPA. Packed: driver event suppression area GPA. */
  driverGpa: number;
  /** Split: used ring GPA. Packed: device event suppression area GPA. */
  deviceGpa: number;
  /** Next avail index to process (SET_VRING_BASE); packed: 0..size-1. */
  lastAvailIdx: number;
  /** Packed: avail wrap counter (default true). */
  availWrap?: boolean;
  /** Next used index (default lastAvailIdx; split rings keep it equal on start). */
  lastUsedIdx?: number;
  /** Packed: used wrap counter (default availWrap). */
  usedWrap?: boolean;
  /** Kick eventfd; absent/null = polling mode (the worker polls the ring periodically). */
  kickFd?: number | null;
  /** Call eventfd; absent/null = no interrupts. The worker writes it itself. */
  callFd?: number | null;
  /** Error eventfd (SET_VRING_ERR), written once when the ring breaks. */
  errFd?: number | null;
  /** VHOST_VRING_F_LOG: log used-ring writes, with the used ring's GPA for the log (log_guest_addr). */
  logUsedGpa?: number | null;
  /** Start paused (vring disabled). Default false. */
  disabled?: boolean;
}

/** A ring as the worker receives it: the spec plus its slot in the control block. */
export interface RingConfig extends Omit<RingSpec, 'kickFd'> {
  slot: number;
  /** True when the main thread forwards kicks for this ring (a kick fd exists). */
  kicked: boolean;
}

/** Worker tuning, set per device. */
export interface WorkerTuning {
  /** Chains popped per burst at most. */
  burstSize: number;
  /** Busy-poll this long after the last work before sleeping (0 = sleep at once). */
  spinUs: number;
  /** Sleep timeout when a ring is in polling mode (no kick fd). */
  pollIntervalMs: number;
  /** In event-loop mode, visit the event loop at least this often while busy. */
  yieldIntervalMs: number;
  /** How long PAUSE/STOP/EXIT wait for a module's in-flight chains to complete. */
  drainTimeoutMs: number;
  /** Sleep in poll(2) on the wake eventfd and the kick fds (see DeviceSpec.kickWait). */
  kickWait: boolean;
}

/** workerData of a queue worker. */
export interface WorkerInit {
  deviceId: string;
  workerIndex: number;
  /** Rings per worker: this worker serves vrings workerIndex * queuesPerWorker + slot. */
  queuesPerWorker: number;
  control: SharedArrayBuffer;
  /** Eventfd the main thread writes after ringing the doorbell while the worker sleeps in poll(2); -1 without kickWait. */
  wakeFd: number;
  /** Port for comlink (rich control). */
  rpcPort: MessagePort;
  /** file: URL of the processing module. */
  moduleUrl: string;
  moduleOptions: Record<string, string>;
  features: bigint;
  regions: RegionSpec[];
  log: LogSpec | null;
  cpus: number[] | null;
  tuning: WorkerTuning;
  rings: RingConfig[];
}

/** Main -> worker: applied on REQ_APPLY with CB_REQ_ARG >= seq. */
export interface UpdateMessage {
  type: 'update';
  seq: number;
  regions?: RegionSpec[];
  /** null detaches the log. */
  log?: LogSpec | null;
  features?: bigint;
  /** Rings to (re)configure and start in their slots (the slot must be unused or stopped). */
  rings?: RingConfig[];
  /** New call fds per slot (null = none). */
  callFds?: { slot: number; fd: number | null }[];
  /** New err fds per slot. */
  errFds?: { slot: number; fd: number | null }[];
}

/** Worker -> main. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'fatal'; message: string; stack?: string }
  | {
      type: 'error';
      /** Ring slot, or -1 for the whole worker. */
      slot: number;
      vringIndex: number;
      reason: 'ring' | 'module' | 'runtime';
      code: string;
      message: string;
    }
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; message: string };
