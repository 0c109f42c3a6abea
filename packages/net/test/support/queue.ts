/**
 * An in-process stand-in for the queue-worker runtime: QueueRing over a
 * virtio device ring and a QueueContext, so the data path can be driven
 * synchronously from a test (the module tests use real workers).
 */
import {
  Chain,
  DirtyLog,
  GuestMemory,
  PackedDeviceRing,
  SplitDeviceRing,
  VIRTIO_F_EVENT_IDX,
  hasFeature,
  type DeviceRing,
} from '@vhost-ts/virtio';
import type { QueueContext, QueueRing } from '@vhost-ts/workers/module-api';
import type { TestRing } from './guest.js';

export class LocalRing implements QueueRing {
  readonly slot: number;
  readonly kind: 'split' | 'packed';
  readonly size: number;
  mode: 'burst' | 'manual' = 'burst';
  device: DeviceRing | null;
  active = true;
  completed = 0;
  private readonly scratch = new Chain();

  constructor(
    readonly index: number,
    mem: GuestMemory,
    features: bigint,
    r: TestRing,
  ) {
    this.slot = index % 2;
    this.kind = r.kind;
    this.size = r.size;
    const eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
    this.device =
      r.kind === 'split'
        ? new SplitDeviceRing(mem, { size: r.size, descGpa: r.descGpa, availGpa: r.driverGpa, usedGpa: r.deviceGpa, eventIdx })
        : new PackedDeviceRing(mem, { size: r.size, descGpa: r.descGpa, driverEventGpa: r.driverGpa, deviceEventGpa: r.deviceGpa, eventIdx });
  }

  pop(): Chain | null {
    return this.popInto(this.scratch) ? this.scratch : null;
  }
  popInto(chain: Chain): boolean {
    if (!this.active || this.device === null) return false;
    return this.device.pop(chain);
  }
  available(): number {
    if (!this.active || this.device === null) return 0;
    const d = this.device as DeviceRing & { available?: () => number };
    return typeof d.available === 'function' ? d.available() : d.hasWork() ? 1 : 0;
  }
  complete(chain: Chain, len: number): void {
    this.completeId(chain.head, len);
  }
  completeId(head: number, len: number): void {
    this.device!.push(head, len);
    this.completed++;
  }
  /** Publishes used entries (what the runtime does after each module call). */
  flush(): void {
    this.device?.flush();
  }
}

/** A context over two LocalRings (RX 2i, TX 2i+1) with optional dirty log. */
export class LocalContext implements QueueContext {
  readonly deviceId = 'test';
  readonly workerIndex = 0;
  readonly rings: LocalRing[];
  readonly options: Readonly<Record<string, string>>;
  readonly log = { debug() {}, info() {}, warn() {}, error() {} };
  features: bigint;
  memory: GuestMemory;
  wakes = 0;

  constructor(mem: GuestMemory, features: bigint, rx: TestRing, tx: TestRing, options: Record<string, string> = {}) {
    this.memory = mem;
    this.features = features;
    this.options = options;
    this.rings = [new LocalRing(rx.index, mem, features, rx), new LocalRing(tx.index, mem, features, tx)];
  }

  ring(i: number): QueueRing | undefined {
    return this.rings.find((r) => r.index === i);
  }
  hasFeature(bit: number): boolean {
    return hasFeature(this.features, bit);
  }
  get logging(): boolean {
    return this.memory.log !== null;
  }
  logWrite(gpa: number, len: number): void {
    this.memory.logWrite(gpa, len);
  }
  newChain(capacity?: number): Chain {
    return new Chain(capacity);
  }
  createPool(): never {
    throw new Error('no pools in LocalContext');
  }
  setEventLoop(): void {}
  wake(): void {
    this.wakes++;
  }
  /** Publishes both rings' used entries. */
  flush(): void {
    for (const r of this.rings) r.flush();
  }
  /** Attaches a dirty log of `bytes` bytes. */
  attachLog(bytes: number): Uint8Array {
    const sab = new SharedArrayBuffer(bytes);
    this.memory.setDirtyLog(new DirtyLog(sab, 0, bytes));
    return new Uint8Array(sab);
  }
}
