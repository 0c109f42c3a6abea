/**
 * Builds virtio device rings from a ring configuration. The only place in the
 * runtime that knows the concrete ring classes: everything else uses virtio's
 * common DeviceRing interface.
 */
import {
  GuestMemory,
  PACKED_BASE_AVAIL_WRAP,
  DirtyLog,
  SplitDeviceRing,
  PackedDeviceRing,
  encodePackedBase,
  VHOST_F_LOG_ALL,
  VIRTIO_F_EVENT_IDX,
  hasFeature,
  type DeviceRing,
} from '@vhost-ts/virtio';
import type { LogSpec, RegionSpec, RingConfig } from './protocol.js';

/** Where to resume a ring (a rebuild after a memory swap keeps its position). */
export interface RingPosition {
  lastAvailIdx: number;
  availWrap: boolean;
  lastUsedIdx: number | undefined;
  usedWrap: boolean;
}

/** The start position a ring config asks for. */
export function initialPosition(cfg: RingConfig): RingPosition {
  const availWrap = cfg.availWrap ?? true;
  return { lastAvailIdx: cfg.lastAvailIdx, availWrap, lastUsedIdx: cfg.lastUsedIdx, usedWrap: cfg.usedWrap ?? availWrap };
}

/** The position of a live ring (its device ring's indices), written into `out` (no allocation). */
export function readPosition(dev: DeviceRing, out: RingPosition): RingPosition {
  out.lastAvailIdx = dev.lastAvailIdx;
  out.lastUsedIdx = dev.lastUsedIdx;
  if (dev.kind === 'split') {
    out.availWrap = false;
    out.usedWrap = false;
  } else {
    const base = dev.vringBase;
    out.availWrap = (base & PACKED_BASE_AVAIL_WRAP) !== 0;
    out.usedWrap = base >>> 31 !== 0;
  }
  return out;
}

/** The position of a live ring, as a new object. */
export function currentPosition(dev: DeviceRing): RingPosition {
  return readPosition(dev, { lastAvailIdx: 0, availWrap: false, lastUsedIdx: 0, usedWrap: false });
}

/** Builds the device ring. Throws RingError on a layout the memory does not hold. */
export function buildDeviceRing(mem: GuestMemory, features: bigint, cfg: RingConfig, pos: RingPosition): DeviceRing {
  const eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
  if ((cfg.kind ?? 'split') === 'split') {
    const dev = new SplitDeviceRing(
      mem,
      { size: cfg.size, descGpa: cfg.descGpa, availGpa: cfg.driverGpa, usedGpa: cfg.deviceGpa, eventIdx },
      { lastAvailIdx: pos.lastAvailIdx, usedLogGpa: cfg.logUsedGpa ?? null },
    );
    // Default: the used index read from the guest's used.idx (vhost-user semantics).
    if (pos.lastUsedIdx !== undefined) dev.lastUsedIdx = pos.lastUsedIdx;
    return settle(dev);
  }
  const dev = new PackedDeviceRing(
    mem,
    { size: cfg.size, descGpa: cfg.descGpa, driverEventGpa: cfg.driverGpa, deviceEventGpa: cfg.deviceGpa, eventIdx },
    {
      vringBase: encodePackedBase(pos.lastAvailIdx, pos.availWrap ? 1 : 0, pos.lastUsedIdx ?? pos.lastAvailIdx, pos.usedWrap ? 1 : 0),
      // Used descriptors are written into the descriptor ring: that is what the log must cover.
      usedLogGpa: cfg.logUsedGpa === undefined || cfg.logUsedGpa === null ? null : cfg.descGpa,
    },
  );
  return settle(dev);
}

/**
 * A new ring object assumes guest notifications are on, but the guest-visible
 * flag may have been left off by the previous object serving the same ring (a
 * memory swap, a restart after GET_VRING_BASE). Turning them off here makes the
 * object's state match memory; the worker turns them on before it sleeps.
 */
function settle(dev: DeviceRing): DeviceRing {
  dev.disableNotifications();
  return dev;
}

/** Guest memory from region specs, with the dirty log attached when logging is active. */
export function buildMemory(regions: readonly RegionSpec[], log: DirtyLog | null): GuestMemory {
  const mem = new GuestMemory(regions.map((r) => ({ gpa: r.gpa, size: r.size, sab: r.sab, sabOffset: r.sabOffset ?? 0 })));
  mem.setDirtyLog(log);
  return mem;
}

/** The dirty log to use: only with a log base and VHOST_F_LOG_ALL negotiated. */
export function buildLog(spec: LogSpec | null, features: bigint): DirtyLog | null {
  if (spec === null || !hasFeature(features, VHOST_F_LOG_ALL)) return null;
  return new DirtyLog(spec.sab, spec.offset ?? 0, spec.size ?? spec.sab.byteLength - (spec.offset ?? 0));
}
