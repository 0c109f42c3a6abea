/**
 * A hostile guest: our front-end negotiates a device correctly, then writes
 * descriptor tables and ring indices by hand into guest memory (split or
 * packed), kicks, and watches the err eventfds, GET_STATUS and the used ring.
 * Guest memory is the `multi` layout (regions separated by 1 MiB GPA holes),
 * and the tail of every region is filled with a canary pattern, so a write
 * that lands outside the buffers the device may write is detected.
 */
import { native } from '@vhost-ts/native';
import { FrontendDevice, VhostUserClient } from '@vhost-ts/frontend';
import { DeviceStatus } from '@vhost-ts/vhost/protocol';
import { VIRTQ_DESC_F_AVAIL } from '@vhost-ts/virtio';

/** Bytes at the end of each region kept as canary. */
export const CANARY_BYTES = 64 << 10;
export const CANARY = 0xa5;

export interface HostileOptions {
  packed?: boolean;
  queueSize?: number;
  /** Guest memory (default 3 MiB in 3 regions). */
  memory?: number;
  regions?: number;
  /** Device feature bits to take when offered (e.g. virtio-net CSUM). */
  deviceFeatures?: bigint;
  /** Protocol features to take when offered (default: the front-end's REPLY_ACK | MQ | STATUS). */
  protocolFeatures?: bigint;
}

export interface Region {
  gpa: number;
  size: number;
  end: number;
}

export class HostileGuest {
  readonly errFds: number[] = [];
  readonly regions: Region[];
  /** Canary ranges excluded for the current case (a buffer the device may legitimately write). */
  private readonly exempt: Array<[number, number]> = [];

  private constructor(readonly fe: FrontendDevice) {
    this.regions = fe.memory.plan.regions.map((r) => ({ gpa: r.guestPhysAddr, size: r.size, end: r.guestPhysAddr + r.size }));
  }

  /** Connects, negotiates (REPLY_ACK, MQ, STATUS; INDIRECT_DESC), sets an err eventfd per vring, fills the canaries. */
  static async open(socketPath: string, o: HostileOptions = {}): Promise<HostileGuest> {
    const client = await VhostUserClient.connect(socketPath, { timeoutMs: 10_000 });
    const fe = await FrontendDevice.start(client, {
      vrings: 2,
      queueSize: o.queueSize ?? 64,
      packed: o.packed ?? false,
      indirect: true,
      memory: { kind: 'multi', size: o.memory ?? 3 << 20, regions: o.regions ?? 3 },
      ...(o.deviceFeatures !== undefined ? { deviceFeatures: o.deviceFeatures } : {}),
      ...(o.protocolFeatures !== undefined ? { protocolFeatures: o.protocolFeatures } : {}),
    });
    const g = new HostileGuest(fe);
    try {
      for (let i = 0; i < fe.vrings.length; i++) {
        const fd = native.eventfdCreate(0);
        g.errFds.push(fd);
        await client.setVringErr(i, fd);
      }
      for (const r of g.regions) g.fill(r.end - CANARY_BYTES, CANARY_BYTES, CANARY);
    } catch (e) {
      await g.close();
      throw e;
    }
    return g;
  }

  get packed(): boolean {
    return this.fe.vrings[0]!.kind === 'packed';
  }

  get queueSize(): number {
    return this.fe.vrings[0]!.size;
  }

  /** A GPA range from the allocator (never in a canary: allocations start at region starts). */
  alloc(size: number, align = 64): number {
    const gpa = this.fe.memory.allocator.alloc(size, align).gpa;
    const r = this.regions.find((x) => gpa >= x.gpa && gpa < x.end)!;
    if (gpa + size > r.end - CANARY_BYTES) throw new Error('allocation reached the canary: use a larger memory');
    return gpa;
  }

  private at(gpa: number, len: number): { dv: DataView; u8: Uint8Array; off: number } {
    const { region, offset } = this.fe.memory.locate(gpa, len);
    return { dv: region.dv, u8: region.u8, off: offset };
  }

  w16(gpa: number, v: number): void {
    const { dv, off } = this.at(gpa, 2);
    dv.setUint16(off, v, true);
  }
  w32(gpa: number, v: number): void {
    const { dv, off } = this.at(gpa, 4);
    dv.setUint32(off, v >>> 0, true);
  }
  w64(gpa: number, v: bigint | number): void {
    const { dv, off } = this.at(gpa, 8);
    dv.setBigUint64(off, BigInt.asUintN(64, BigInt(v)), true);
  }
  r16(gpa: number): number {
    const { dv, off } = this.at(gpa, 2);
    return dv.getUint16(off, true);
  }
  /** A ring index word as one 16-bit atomic store (a torn write would be a test artefact). */
  store16(gpa: number, v: number): void {
    const { u8, off } = this.at(gpa, 2);
    if ((u8.byteOffset + off) % 2 !== 0) throw new Error('unaligned index word');
    Atomics.store(new Uint16Array(u8.buffer, u8.byteOffset + off, 1), 0, v & 0xffff);
  }
  fill(gpa: number, len: number, v: number): void {
    const { u8, off } = this.at(gpa, len);
    u8.fill(v, off, off + len);
  }
  bytes(gpa: number, data: Uint8Array): void {
    const { u8, off } = this.at(gpa, data.byteLength);
    u8.set(data, off);
  }

  /** Split: writes descriptor `i` of a table at `table`. */
  splitDesc(table: number, i: number, addr: bigint | number, len: number, flags: number, next: number): void {
    const d = table + i * 16;
    this.w64(d, addr);
    this.w32(d + 8, len);
    this.w16(d + 12, flags);
    this.w16(d + 14, next);
  }

  /** Packed: writes descriptor `i` of a table at `table` (flags as given: add AVAIL for wrap 1). */
  packedDesc(table: number, i: number, addr: bigint | number, len: number, id: number, flags: number): void {
    const d = table + i * 16;
    this.w64(d, addr);
    this.w32(d + 8, len);
    this.w16(d + 12, id);
    // The flags word is what the device polls: store it last, atomically.
    this.store16(d + 14, flags);
  }

  /** Split: makes heads available on vring `ring` (avail ring entries, then one idx store). */
  publishSplit(ring: number, heads: readonly number[], idxOverride?: number): void {
    const v = this.fe.vrings[ring]!;
    let idx = this.r16(v.driverGpa + 2);
    for (const h of heads) {
      this.w16(v.driverGpa + 4 + 2 * (idx % v.size), h);
      idx = (idx + 1) & 0xffff;
    }
    this.store16(v.driverGpa + 2, idxOverride ?? idx);
  }

  /** Split: used.idx of a vring (what the device published). */
  usedIdx(ring: number): number {
    const v = this.fe.vrings[ring]!;
    return this.r16(v.deviceGpa + 2);
  }

  /** Packed: flags of descriptor slot `i` (the device sets AVAIL == USED == wrap on use). */
  packedFlags(ring: number, i: number): number {
    const v = this.fe.vrings[ring]!;
    return this.r16(v.descGpa + i * 16 + 14);
  }

  /** Posts `count` valid device-writable buffers of `size` bytes on vring `ring` through the driver ring. */
  postWritable(ring: number, count: number, size = 2048): void {
    const v = this.fe.vrings[ring]!;
    for (let k = 0; k < count; k++) {
      const gpa = this.alloc(size);
      if (v.ring.add([gpa], [size], 0, 1, k) < 0) break;
    }
    v.ring.publish();
  }

  /** Posts `count` valid device-readable buffers through the driver ring. */
  postReadable(ring: number, count: number, size = 64): void {
    const v = this.fe.vrings[ring]!;
    for (let k = 0; k < count; k++) {
      const gpa = this.alloc(size);
      this.fill(gpa, size, 0x11);
      if (v.ring.add([gpa], [size], 1, 0, k) < 0) break;
    }
    v.ring.publish();
  }

  kick(ring: number): void {
    this.fe.kick(ring);
  }

  /** Exempts [gpa, gpa+len) from the canary check (the device may write there). */
  exemptCanary(gpa: number, len: number): void {
    this.exempt.push([gpa, gpa + len]);
  }

  /** Canary bytes that changed: "gpa 0x..: n bytes" per region, empty when intact. */
  canaryDamage(): string[] {
    const out: string[] = [];
    for (const r of this.regions) {
      const start = r.end - CANARY_BYTES;
      const { u8, off } = this.at(start, CANARY_BYTES);
      let bad = 0;
      let first = -1;
      for (let i = 0; i < CANARY_BYTES; i++) {
        if (u8[off + i] === CANARY) continue;
        const gpa = start + i;
        if (this.exempt.some(([a, b]) => gpa >= a && gpa < b)) continue;
        bad++;
        if (first < 0) first = gpa;
      }
      if (bad > 0) out.push(`region [0x${r.gpa.toString(16)}, 0x${r.end.toString(16)}): ${bad} canary bytes changed from gpa 0x${first.toString(16)}`);
    }
    return out;
  }

  /** Err eventfd counter of a vring (reads and resets it). */
  errCount(ring: number): number {
    return native.eventfdRead(this.errFds[ring]!);
  }

  async status(): Promise<number> {
    return this.fe.client.getStatus();
  }

  /**
   * Waits until vring `ring`'s err eventfd fired and GET_STATUS shows
   * NEEDS_RESET; returns what was seen (bounded by `timeoutMs`).
   */
  async waitNeedsReset(ring: number, timeoutMs = 5000): Promise<{ err: boolean; needsReset: boolean; ms: number }> {
    const t0 = performance.now();
    let err = false;
    let needsReset = false;
    while (performance.now() - t0 < timeoutMs) {
      if (!err && this.errCount(ring) > 0) err = true;
      if (err && !needsReset) needsReset = ((await this.status()) & DeviceStatus.NEEDS_RESET) !== 0;
      if (err && needsReset) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    return { err, needsReset, ms: performance.now() - t0 };
  }

  /** Graceful stop (GET_VRING_BASE must still be answered), then close everything. */
  async close(): Promise<{ stopped: boolean }> {
    let stopped = false;
    try {
      stopped = (await this.fe.close({ graceful: true })) !== null;
    } finally {
      for (const fd of this.errFds.splice(0)) native.close(fd);
    }
    return { stopped };
  }
}

export const AVAIL = VIRTQ_DESC_F_AVAIL;
