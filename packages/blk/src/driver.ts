/**
 * The control side of the vhost-user blk driver: a {@link VhostUserDriver}
 * configured for virtio-blk (features, config space, INFLIGHT_SHMFD) whose
 * request queues are served by queue workers running the blk module (one
 * worker per request queue by default).
 *
 * @example
 * ```ts
 * const blk = new BlkDriver({ path: '/tmp/blk.sock', blkFile: '/var/lib/disk.img', queues: 2 });
 * await blk.start();
 * // the file grew: tell the guest
 * await blk.resize();
 * await blk.stop();
 * ```
 */
import { DEFAULT_FEATURES, VhostUserDriver, stderrLogger, type ConfigSpace, type InflightInfo, type Logger, type VhostCallbacks, type VhostDevice } from '@vhost-ts/vhost';
import { attachDataPlane, type DataPlane } from '@vhost-ts/vhost/dataplane/index';
import { BLK_CFG_WRITEBACK, VIRTIO_BLK_F_CONFIG_WCE, hasFeature } from '@vhost-ts/virtio';
import type { DeviceWorkers, QueueWorkerManager } from '@vhost-ts/workers';
import { backingSizeOf } from './backing.js';
import { blkDeviceFeatures, blkGeometry, encodeBlkConfig, exposedCapacity, geometryOptions, type BlkGeometry } from './config.js';
import type { IoMode } from './engine.js';
import type { InflightAreaSpec } from './inflight.js';

/** The processing module's compiled file. */
export const BLK_MODULE_URL = new URL('./modules/blk.js', import.meta.url);

export interface BlkDriverOptions {
  /** vhost-user socket path (server unless `client`). */
  path?: string;
  /** An inherited listening socket fd instead of `path`. */
  fd?: number;
  /** Connect to `path` (the front-end listens), redialling when it goes away. */
  client?: boolean;
  /** Backing file or block device. */
  blkFile: string;
  readOnly?: boolean;
  /** Request queues (num_queues), default 1. */
  queues?: number;
  /** Logical block size (512 .. 4096), default 512. */
  blockSize?: number;
  /** GET_ID serial (at most 20 bytes). Default: derived from the file name. */
  serial?: string;
  /** How the workers do file I/O (default 'sync'; see engine.ts). */
  io?: IoMode;
  /** Write-back cache (default true; the guest may change it with CONFIG_WCE). */
  writeback?: boolean;
  /** Offer VIRTIO_F_RING_PACKED (default true). */
  packed?: boolean;
  /** Offer INFLIGHT_SHMFD (default true): requests in flight survive a back-end restart. */
  inflight?: boolean;
  /** Request queues per worker (default 1). */
  queuesPerWorker?: number;
  /** CPUs to pin the queue workers to. */
  cpus?: number[];
  spinUs?: number;
  burstSize?: number;
  manager?: QueueWorkerManager;
  logger?: Logger;
  /** Extra device callbacks (run after the data plane's). */
  callbacks?: VhostCallbacks;
  callbackTimeoutMs?: number;
  /** Testing: hold every completion this many ms (needs io 'async'; see engine.ts). */
  completionDelayMs?: number;
  /** Processing module (default the shipped one; tests may wrap it). */
  module?: URL | string;
}

/** Cumulative counters of one request queue. */
export interface BlkQueueStats {
  vring: number;
  requests: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** IOERR + UNSUPP + malformed. */
  errors: number;
  /** Requests in the worker now plus requests waiting in the ring (a sample). */
  depth: number;
  resubmitted: number;
}

export interface BlkDeviceStats {
  device: number;
  queues: BlkQueueStats[];
}

/** What {@link BlkDriver.resize} did. */
export interface ResizeResult {
  oldBytes: number;
  newBytes: number;
  changed: boolean;
  /** Devices told through CONFIG_CHANGE_MSG. */
  notified: number;
}

export class BlkDriver {
  readonly vhost: VhostUserDriver;
  readonly dataPlane: DataPlane;
  readonly features: bigint;
  readonly blkFile: string;
  private geo: BlkGeometry;
  private readonly logger: Logger;
  private readonly inflight: boolean;

  constructor(o: BlkDriverOptions) {
    const queues = o.queues ?? 1;
    if ((o.completionDelayMs ?? 0) > 0 && o.io !== 'async') throw new RangeError('completionDelayMs needs io async');
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new RangeError(`queues ${queues} outside 1..64`);
    const readOnly = o.readOnly ?? false;
    const size = backingSizeOf(o.blkFile);
    this.blkFile = o.blkFile;
    this.geo = blkGeometry({
      capacityBytes: size,
      blockSize: o.blockSize ?? 512,
      numQueues: queues,
      readOnly,
      writeback: o.writeback ?? true,
    });
    if (this.geo.capacityBytes === 0) throw new RangeError(`${o.blkFile}: smaller than one ${this.geo.blockSize}-byte block`);
    this.logger = o.logger ?? stderrLogger();
    this.inflight = o.inflight ?? true;
    // The blk features plus the control plane's defaults (bit 30, VHOST_F_LOG_ALL for live migration:
    // the module logs the guest memory it writes).
    this.features = DEFAULT_FEATURES | blkDeviceFeatures(this.geo, { packed: o.packed ?? true });
    const serial = o.serial ?? defaultSerial(o.blkFile);
    if (Buffer.byteLength(serial) > 20) throw new RangeError(`serial '${serial}' longer than 20 bytes`);
    const config: ConfigSpace = {
      get: (_dev, offset, len) => {
        const bytes = encodeBlkConfig(this.geo);
        const out = new Uint8Array(len);
        if (offset < bytes.length) out.set(bytes.subarray(offset, Math.min(bytes.length, offset + len)));
        return out;
      },
      set: async (dev, offset, data) => {
        // Only the writeback byte is guest-writable, and only with CONFIG_WCE.
        if (offset !== BLK_CFG_WRITEBACK || data.length !== 1 || !hasFeature(dev.features, VIRTIO_BLK_F_CONFIG_WCE)) return false;
        const on = data[0] !== 0;
        if (on !== this.geo.writeback) {
          this.geo = { ...this.geo, writeback: on };
          this.logger.info(`${this.vhost.path}: device ${dev.id}: cache mode ${on ? 'write-back' : 'write-through'}`);
          await this.configureWorkers({ writeback: on ? '1' : '0' });
        }
        return true;
      },
    };
    this.vhost = new VhostUserDriver({
      ...(o.path !== undefined ? { path: o.path } : {}),
      ...(o.fd !== undefined ? { fd: o.fd } : {}),
      ...(o.client === true ? { client: true, reconnect: true } : {}),
      maxQueues: queues,
      queueNum: queues,
      // QEMU only sets up the queues the guest driver uses (one vCPU: one queue), though it names all
      // of them (SET_VRING_CALL/ERR/ENABLE): queue 0 is enough to start, the others join when ready.
      requiredQueues: 1,
      features: this.features,
      config,
      inflight: this.inflight,
      logger: this.logger,
      ...(o.callbackTimeoutMs !== undefined ? { callbackTimeoutMs: o.callbackTimeoutMs } : {}),
    });
    const user = o.callbacks ?? {};
    this.dataPlane = attachDataPlane(this.vhost, {
      module: o.module ?? BLK_MODULE_URL,
      moduleOptions: {
        path: o.blkFile,
        ...geometryOptions(this.geo),
        serial,
        io: o.io ?? 'sync',
        ...(o.completionDelayMs !== undefined && o.completionDelayMs > 0 ? { completionDelayMs: String(o.completionDelayMs) } : {}),
        // The glue starts the rings with the workers: hold them until newDevice has handed over the
        // inflight area (or said there is none) and the current capacity.
        inflight: 'wait',
      },
      queuesPerWorker: o.queuesPerWorker ?? 1,
      numRings: queues,
      logger: this.logger,
      ...(o.cpus !== undefined && o.cpus.length > 0 ? { cpus: o.cpus } : {}),
      ...(o.spinUs !== undefined ? { spinUs: o.spinUs } : {}),
      ...(o.burstSize !== undefined ? { burstSize: o.burstSize } : {}),
      ...(o.manager !== undefined ? { manager: o.manager } : {}),
      callbacks: {
        ...user,
        newDevice: async (dev) => {
          const w = this.dataPlane.workers(dev);
          if (w !== undefined) {
            // Current capacity and cache mode (the module options are those of start-up).
            await this.configureDevice(w, { capacity: String(this.geo.capacityBytes), writeback: this.geo.writeback ? '1' : '0' });
            const area = this.inflight ? inflightSpec(dev.inflight) : null;
            for (let i = 0; i < w.workerCount; i++) await w.remote(i).call('setInflight', area);
          }
          this.logger.info(
            `${this.vhost.path}: device ${dev.id} started: ${dev.vringCount} queue(s), features 0x${dev.features.toString(16)}` +
              (dev.inflight !== null ? `, inflight area of ${dev.inflight.numQueues}x${dev.inflight.queueSize}` : ''),
          );
          await user.newDevice?.(dev);
        },
        destroyDevice: async (dev) => {
          // Before the data plane stops the device's workers (callbacks run first on stop).
          await this.logTotals(dev);
          await user.destroyDevice?.(dev);
        },
      },
    });
  }

  /** The current geometry (capacity changes with {@link resize}). */
  get geometry(): BlkGeometry {
    return this.geo;
  }

  async start(): Promise<void> {
    await this.vhost.start();
  }

  /** Closes the socket and every connection; every worker, fd and mapping is released when this resolves. */
  async stop(): Promise<void> {
    await this.vhost.stop();
    await this.dataPlane.stopAll();
  }

  get devices(): readonly VhostDevice[] {
    return this.vhost.devices;
  }

  workers(dev: VhostDevice): DeviceWorkers | undefined {
    return this.dataPlane.workers(dev);
  }

  /**
   * Re-reads the backing store's size; when it changed, the workers accept
   * the new range first, then every connected device gets CONFIG_CHANGE_MSG
   * (the guest re-reads the capacity).
   */
  async resize(): Promise<ResizeResult> {
    const oldBytes = this.geo.capacityBytes;
    const newBytes = exposedCapacity(backingSizeOf(this.blkFile), this.geo.blockSize);
    if (newBytes === oldBytes) return { oldBytes, newBytes, changed: false, notified: 0 };
    if (newBytes === 0) throw new RangeError(`${this.blkFile}: shrank below one block; capacity unchanged`);
    this.geo = { ...this.geo, capacityBytes: newBytes };
    await this.configureWorkers({ capacity: String(newBytes) });
    let notified = 0;
    for (const dev of this.devices) {
      try {
        await dev.configChange();
        notified++;
      } catch (e) {
        this.logger.warn(`${this.vhost.path}: device ${dev.id}: config change not delivered: ${(e as Error).message}`);
      }
    }
    this.logger.info(`${this.vhost.path}: capacity ${oldBytes} -> ${newBytes} bytes (${notified} device(s) notified)`);
    return { oldBytes, newBytes, changed: true, notified };
  }

  private async configureWorkers(options: Record<string, string>): Promise<void> {
    for (const dev of this.devices) {
      const w = this.dataPlane.workers(dev);
      if (w !== undefined) await this.configureDevice(w, options);
    }
  }

  private async configureDevice(w: DeviceWorkers, options: Record<string, string>): Promise<void> {
    await Promise.all(Array.from({ length: w.workerCount }, (_, i) => w.remote(i).configure(options)));
  }

  /** Cumulative per-queue counters of every running device (module stats through comlink: control rate only). */
  async stats(): Promise<BlkDeviceStats[]> {
    const out: BlkDeviceStats[] = [];
    for (const dev of this.devices) {
      const queues = await this.queueStats(dev);
      if (queues !== null) out.push({ device: dev.id, queues });
    }
    return out;
  }

  /** Per-queue counters of one device, or null when it has no workers (not started, or gone). */
  private async queueStats(dev: VhostDevice): Promise<BlkQueueStats[] | null> {
    const w = this.dataPlane.workers(dev);
    if (w === undefined) return null;
    const queues: BlkQueueStats[] = [];
    await Promise.all(
      Array.from({ length: w.workerCount }, async (_, wi) => {
        let ms: Record<string, number> = {};
        try {
          ms = await w.remote(wi).moduleStats();
        } catch {
          return; // stopping
        }
        const first = wi * w.queuesPerWorker;
        for (let v = first; v < first + w.queuesPerWorker && v < this.geo.numQueues; v++) {
          const g = (k: string): number => ms[`vring${v}.${k}`] ?? 0;
          queues.push({
            vring: v,
            requests: g('requests'),
            reads: g('reads'),
            writes: g('writes'),
            bytesRead: g('bytesRead'),
            bytesWritten: g('bytesWritten'),
            errors: g('ioErrors') + g('unsupported') + g('malformed'),
            depth: g('inflight') + g('available'),
            resubmitted: g('resubmitted'),
          });
        }
      }),
    );
    queues.sort((a, b) => a.vring - b.vring);
    return queues;
  }

  /**
   * Logs a stopping device's totals per queue (requests, bytes, errors): the live view samples
   * at intervals and a device that stops between two samples (a guest that boots, writes and
   * shuts down within one interval) would otherwise leave no trace of its I/O. Bounded: a worker
   * that does not answer within 1 s only costs the line.
   */
  private async logTotals(dev: VhostDevice): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const queues = await Promise.race([
      this.queueStats(dev).catch(() => null),
      new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 1000))),
    ]);
    clearTimeout(timer);
    if (queues === null || queues.length === 0) return;
    const cells = queues.map((q) => `q${q.vring} ${q.requests} requests ${q.bytesRead + q.bytesWritten} bytes ${q.errors} errors`);
    this.logger.info(`${this.vhost.path}: device ${dev.id} totals: ${cells.join(', ')}`);
  }
}

/** The inflight area as the module takes it (plain, structured-cloneable), or null. */
export function inflightSpec(info: InflightInfo | null): InflightAreaSpec | null {
  if (info === null) return null;
  return {
    sab: info.sab,
    offset: info.offset,
    queueRegionSize: info.queueRegionSize,
    numQueues: info.numQueues,
    queueSize: info.queueSize,
    packed: info.packed,
  };
}

/** A 20-byte-at-most serial from the file name. */
function defaultSerial(file: string): string {
  const base = file.split('/').pop() ?? 'vhost-ts';
  return base.slice(0, 20);
}
