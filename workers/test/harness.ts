import { afterEach } from 'vitest';
import { QueueWorkerManager, modules, type DeviceSpec, type DeviceWorkers } from '@vhost-ts/workers';
import type { FakeGuestMemory, FakeGuestRing } from './guest.js';

export const manager = new QueueWorkerManager();
const cleanups: (() => Promise<unknown> | unknown)[] = [];

/** Registers a cleanup run after the current test (reverse order). */
export function onCleanup(fn: () => Promise<unknown> | unknown): void {
  cleanups.push(fn);
}

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Starts a device over fake guest rings (sink module, no spinning unless asked). */
export async function startDevice(
  guest: FakeGuestMemory,
  rings: FakeGuestRing[],
  extra: Partial<DeviceSpec> = {},
): Promise<DeviceWorkers> {
  const dev = await manager.startDevice({
    module: modules.sink,
    features: 0n,
    regions: guest.regions(),
    rings: rings.map((r) => r.spec()),
    spinUs: 0,
    ...extra,
  });
  onCleanup(() => dev.stop());
  return dev;
}

/** Reads a little-endian u16 of guest memory (Atomics, as the peers do). */
export function guestU16(guest: FakeGuestMemory, gpa: number): number {
  const r = guest.mem.regions[0]!;
  return Atomics.load(r.u16, (gpa - r.gpa) >> 1);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
