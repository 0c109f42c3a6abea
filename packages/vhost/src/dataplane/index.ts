/**
 * The glue between the control plane (VhostUserDriver callbacks) and the
 * data plane (@vhost-ts/workers): every device's vrings are served by queue
 * workers running a processing module.
 *
 * ```ts
 * const drv = new VhostUserDriver({ path, maxQueues: 8, queueNum: 4 });
 * const dp = attachDataPlane(drv, { module: netEchoModuleUrl, queuesPerWorker: 2, cpus: [1] });
 * await drv.start();
 * ```
 *
 * Callback mapping (the vhost callback contract, see callbacks.ts):
 * - newDevice: start the device's workers with every usable vring.
 * - destroyDevice: stop and join the workers; write each started ring's
 *   indices back into its VringInfo before resolving (GET_VRING_BASE reads them).
 * - vringStateChanged(i, true/false): start ring i / stop it and write its indices back.
 * - memoryChanging / memoryChanged: pause every worker / new region views and
 *   dirty log, restart rings whose translated addresses moved, resume.
 * - featuresChanged: new features in the workers (VHOST_F_LOG_ALL toggled).
 * - a ring error or a module exception: the device needs a reset (see
 *   {@link DataPlaneOptions.onError}); the worker already wrote the ring's err eventfd.
 */
import {
  QueueWorkerManager,
  type DataPlaneError,
  type DeviceSpec,
  type DeviceWorkers,
  type LogSpec,
  type RegionSpec,
  type RingIndices,
  type RingSpec,
} from '@vhost-ts/workers';
import type { VhostCallbacks } from '../callbacks.js';
import type { VhostDevice } from '../device/device.js';
import type { VringInfo } from '../device/vring.js';
import type { VhostUserDriver } from '../driver.js';
import { stderrLogger, type Logger } from '../log.js';
import { VRING_F_LOG } from '../protocol/constants.js';

/** How a driver's vrings are served. */
export interface DataPlaneOptions {
  /** Processing module (compiled JS path or file: URL with a default export). */
  module: string | URL;
  /** String options for the module (`ctx.options`). */
  moduleOptions?: Record<string, string>;
  /** Vrings per worker (net: 2, one queue pair per worker). Default 1. */
  queuesPerWorker?: number;
  /** CPUs to pin workers to (worker w on cpus[w % length]). Default: not pinned. */
  cpus?: number[];
  /** Busy-poll time before sleeping, µs (default: the manager's: 20 pinned or > 2 CPUs, else 0). */
  spinUs?: number;
  /** Chains per burst (default 64). */
  burstSize?: number;
  /** Poll interval of rings without a kick fd, ms (default 1). */
  pollIntervalMs?: number;
  /** Acknowledgement timeout of every control handshake, ms (default 5000; keep below the driver's callbackTimeoutMs). */
  ackTimeoutMs?: number;
  /** Minimum vrings per device to create workers for (default: the device's vring count at newDevice). */
  numRings?: number;
  /**
   * The driver's own callbacks. Data-plane work runs first on start/change
   * callbacks (newDevice, vringStateChanged true, memoryChanged,
   * featuresChanged) and last on stop callbacks (destroyDevice,
   * vringStateChanged false, memoryChanging); every other callback is passed
   * through. attachDataPlane registers the combined set on the driver.
   */
  callbacks?: VhostCallbacks;
  /**
   * A ring broke (malformed ring from the guest), the module threw, or a
   * worker died: the device needs a reset. Default: log it and set
   * NEEDS_RESET when the device supports it.
   */
  onError?(dev: VhostDevice, error: DataPlaneError): void;
  /** Log lines (default stderr). */
  logger?: Logger;
  /** Manager to use (default: a new one). */
  manager?: QueueWorkerManager;
}

/** What attachDataPlane returns. */
export interface DataPlane {
  readonly manager: QueueWorkerManager;
  /** The workers of a running device (for stats and comlink control), if any. */
  workers(dev: VhostDevice): DeviceWorkers | undefined;
  /** Stops every device's workers (indices written back). The driver's callbacks stay registered. */
  stopAll(): Promise<void>;
}

interface DeviceEntry {
  workers: DeviceWorkers;
  /** Rings the workers serve, with the spec they were started from. */
  rings: Map<number, RingSpec>;
}

/** Maps the driver's device callbacks onto queue workers. */
export function attachDataPlane(driver: VhostUserDriver, options: DataPlaneOptions): DataPlane {
  const manager = options.manager ?? new QueueWorkerManager();
  const logger = options.logger ?? stderrLogger();
  const user = options.callbacks ?? {};
  const qpw = options.queuesPerWorker ?? 1;
  const devices = new Map<VhostDevice, DeviceEntry>();

  const onError =
    options.onError ??
    ((dev: VhostDevice, e: DataPlaneError): void => {
      logger.error(`device ${dev.id}: data plane ${e.reason} error${e.ringIndex !== null ? ` on vring ${e.ringIndex}` : ''}: ${e.message}`);
      markNeedsReset(dev, e.message, logger);
    });

  async function stopRings(dev: VhostDevice, entry: DeviceEntry, indices: number[]): Promise<void> {
    const stopped = await entry.workers.stopRings(indices);
    for (const ix of stopped) {
      writeBack(dev, ix);
      entry.rings.delete(ix.index);
    }
  }

  const callbacks: VhostCallbacks = {
    ...user,

    async newDevice(dev: VhostDevice): Promise<void> {
      const old = devices.get(dev);
      if (old !== undefined) {
        // A newDevice without destroyDevice should not happen; do not leak the old workers.
        devices.delete(dev);
        await old.workers.stop();
      }
      const rings: RingSpec[] = [];
      for (let i = 0; i < dev.vringCount; i++) {
        const v = dev.vring(i);
        if (v.usable) rings.push(ringSpec(v));
      }
      const minRings = Math.max(dev.vringCount, options.numRings ?? 0, 1);
      const spec: DeviceSpec = {
        id: `vhost${dev.id}`,
        module: options.module,
        moduleOptions: options.moduleOptions ?? {},
        features: dev.features,
        regions: regions(dev),
        log: logSpec(dev),
        numRings: Math.ceil(minRings / qpw) * qpw,
        rings,
        queuesPerWorker: qpw,
        logger: (level, message) => logger[level](message),
        ...(options.cpus !== undefined ? { cpus: options.cpus } : {}),
        ...(options.spinUs !== undefined ? { spinUs: options.spinUs } : {}),
        ...(options.burstSize !== undefined ? { burstSize: options.burstSize } : {}),
        ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
        ...(options.ackTimeoutMs !== undefined ? { ackTimeoutMs: options.ackTimeoutMs } : {}),
      };
      const workers = await manager.startDevice(spec);
      const entry: DeviceEntry = { workers, rings: new Map(rings.map((r) => [r.index, r])) };
      devices.set(dev, entry);
      workers.onError((e) => onError(dev, e));
      await user.newDevice?.(dev);
    },

    async destroyDevice(dev: VhostDevice): Promise<void> {
      try {
        await user.destroyDevice?.(dev);
      } finally {
        const entry = devices.get(dev);
        if (entry !== undefined) {
          devices.delete(dev);
          const indices = await entry.workers.stop();
          for (const ix of indices) writeBack(dev, ix);
        }
      }
    },

    async vringStateChanged(dev: VhostDevice, index: number, enabled: boolean): Promise<void> {
      const entry = devices.get(dev);
      if (!enabled) {
        await user.vringStateChanged?.(dev, index, enabled);
        if (entry !== undefined && entry.rings.has(index)) await stopRings(dev, entry, [index]);
        return;
      }
      if (entry !== undefined && !entry.rings.has(index)) {
        if (index >= entry.workers.numRings) {
          throw new Error(`vring ${index} is beyond the ${entry.workers.numRings} vrings the device's workers were started for`);
        }
        const spec = ringSpec(dev.vring(index));
        await entry.workers.startRings([spec]);
        entry.rings.set(index, spec);
      }
      await user.vringStateChanged?.(dev, index, enabled);
    },

    async memoryChanging(dev: VhostDevice): Promise<void> {
      await user.memoryChanging?.(dev);
      await devices.get(dev)?.workers.pause();
    },

    async memoryChanged(dev: VhostDevice): Promise<void> {
      const entry = devices.get(dev);
      if (entry !== undefined) {
        await entry.workers.update({ regions: regions(dev), log: logSpec(dev) });
        // A new table may translate a ring's front-end addresses to other GPAs: restart those rings.
        const moved: RingSpec[] = [];
        for (const [index, old] of entry.rings) {
          const v = dev.vring(index);
          if (v.descGpa !== old.descGpa || v.availGpa !== old.driverGpa || v.usedGpa !== old.deviceGpa) moved.push(old);
        }
        if (moved.length > 0) {
          await stopRings(dev, entry, moved.map((r) => r.index));
          const specs = moved.map((r) => ringSpec(dev.vring(r.index)));
          await entry.workers.startRings(specs);
          for (const s of specs) entry.rings.set(s.index, s);
        }
        await entry.workers.resume();
      }
      await user.memoryChanged?.(dev);
    },

    async featuresChanged(dev: VhostDevice, features: bigint): Promise<void> {
      await devices.get(dev)?.workers.setFeatures(features);
      await user.featuresChanged?.(dev, features);
    },

    async destroyConnection(dev: VhostDevice, reason: string): Promise<void> {
      // destroyDevice came first; this only covers a device whose stop failed.
      const entry = devices.get(dev);
      if (entry !== undefined) {
        devices.delete(dev);
        await entry.workers.stop();
      }
      await user.destroyConnection?.(dev, reason);
    },
  };
  driver.registerCallbacks(callbacks);

  return {
    manager,
    workers: (dev) => devices.get(dev)?.workers,
    async stopAll(): Promise<void> {
      const all = [...devices];
      devices.clear();
      await Promise.all(
        all.map(async ([dev, entry]) => {
          for (const ix of await entry.workers.stop()) writeBack(dev, ix);
        }),
      );
    },
  };
}

/** The worker's view of a vring. */
export function ringSpec(v: VringInfo): RingSpec {
  return {
    index: v.index,
    kind: v.packed ? 'packed' : 'split',
    size: v.size,
    descGpa: v.descGpa,
    driverGpa: v.availGpa,
    deviceGpa: v.usedGpa,
    lastAvailIdx: v.lastAvailIdx,
    availWrap: v.availWrapCounter,
    lastUsedIdx: v.lastUsedIdx,
    usedWrap: v.usedWrapCounter,
    kickFd: v.kickFd >= 0 && !v.kickPolling ? v.kickFd : null,
    callFd: v.callFd >= 0 && !v.callPolling ? v.callFd : null,
    errFd: v.errFd >= 0 ? v.errFd : null,
    logUsedGpa: (v.addrFlags & VRING_F_LOG) !== 0 ? v.logGuestAddr : null,
  };
}

function regions(dev: VhostDevice): RegionSpec[] {
  const mem = dev.memory;
  if (mem === null) throw new Error(`device ${dev.id}: no memory table`);
  return mem.views.map((v) => ({ gpa: v.gpa, size: v.size, sab: v.sab, sabOffset: v.sabOffset }));
}

function logSpec(dev: VhostDevice): LogSpec | null {
  const log = dev.log;
  return log === null ? null : { sab: log.sab, offset: log.offset, size: log.size };
}

function writeBack(dev: VhostDevice, ix: RingIndices): void {
  dev.setVringBase(ix.index, {
    lastAvailIdx: ix.lastAvailIdx,
    lastUsedIdx: ix.lastUsedIdx,
    availWrapCounter: ix.availWrap,
    usedWrapCounter: ix.usedWrap,
  });
}

const warnedNoReset = new WeakSet<VhostDevice>();

/**
 * Sets NEEDS_RESET on the device. VhostDevice has no public setter yet (the
 * control plane owns the status byte); until it does, this only logs.
 */
function markNeedsReset(dev: VhostDevice, reason: string, logger: Logger): void {
  const d = dev as unknown as { setNeedsReset?: (reason: string) => void };
  if (typeof d.setNeedsReset === 'function') {
    d.setNeedsReset(reason);
    return;
  }
  if (!warnedNoReset.has(dev)) {
    warnedNoReset.add(dev);
    logger.warn(`device ${dev.id}: needs a reset (${reason}); the control plane offers no NEEDS_RESET setter, status unchanged`);
  }
}
