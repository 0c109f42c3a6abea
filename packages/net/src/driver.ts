/**
 * The control side of the vhost-user net driver: a {@link VhostUserDriver}
 * configured for virtio-net (features, protocol features, config space,
 * queue pairs) with its vrings served by queue workers running a net module
 * (one worker per queue pair by default).
 *
 * @example
 * ```ts
 * const net = new NetDriver({ path: '/tmp/net.sock', queuePairs: 2, module: 'echo' });
 * await net.start();
 * // ... later
 * await net.stop();
 * ```
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import { VhostUserDriver, type ConfigSpace, type Logger, type VhostCallbacks, type VhostDevice, stderrLogger } from '@vhost-ts/vhost';
import { attachDataPlane, type DataPlane } from '@vhost-ts/vhost/dataplane/index';
import { ProtocolFeature, bit, bits } from '@vhost-ts/vhost/protocol';
import type { DeviceWorkers, QueueWorkerManager } from '@vhost-ts/workers';
import { formatMac, parseMac } from './packet/ethernet.js';
import { NET_STAT_NAMES } from './module-kit.js';
import { encodeNetConfig, netFeatures, VIRTIO_NET_S_LINK_UP, type NetConfig } from './virtio-net.js';

/** The shipped modules, by name (compiled JS next to this file). */
export const NET_MODULES = {
  echo: new URL('./modules/echo.js', import.meta.url),
  macswap: new URL('./modules/macswap.js', import.meta.url),
  sink: new URL('./modules/sink.js', import.meta.url),
  responder: new URL('./modules/responder.js', import.meta.url),
  switch: new URL('./modules/switch.js', import.meta.url),
} as const;

export type NetModuleName = keyof typeof NET_MODULES;

/** Resolves `--module`: a shipped name, a path to a compiled module, or a file: URL. */
export function resolveNetModule(module: string | URL): { url: URL; shipped: boolean; name: string } {
  if (module instanceof URL) return { url: module, shipped: Object.values(NET_MODULES).some((u) => u.href === module.href), name: module.href };
  if (Object.hasOwn(NET_MODULES, module)) return { url: NET_MODULES[module as NetModuleName], shipped: true, name: module };
  if (module.startsWith('file:')) return { url: new URL(module), shipped: false, name: fileURLToPath(module) };
  if (!module.includes('/') && !module.endsWith('.js') && !module.endsWith('.mjs')) {
    throw new Error(`unknown module '${module}' (shipped: ${Object.keys(NET_MODULES).join(', ')}; or a path to a compiled module file)`);
  }
  return { url: pathToFileURL(path.resolve(module)), shipped: false, name: module };
}

/**
 * Protocol features a net back-end offers (CONFIG is kept by the control
 * plane only with a config space). CONFIGURE_MEM_SLOTS with any number of
 * queue pairs: QEMU runs one vhost device per queue pair on the same
 * connection and each sends ADD_MEM_REG for the same regions; the control
 * plane counts an identical ADD_MEM_REG as one more reference to the region
 * (and REM_MEM_REG drops one), so the duplicates are not refused.
 */
export function netProtocolFeatures(mtu: boolean): bigint {
  let pf = bits(
    ProtocolFeature.MQ,
    ProtocolFeature.LOG_SHMFD,
    ProtocolFeature.RARP,
    ProtocolFeature.REPLY_ACK,
    ProtocolFeature.BACKEND_REQ,
    ProtocolFeature.CONFIG,
    ProtocolFeature.RESET_DEVICE,
    ProtocolFeature.STATUS,
  );
  pf |= bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);
  // "NET_MTU only with VIRTIO_NET_F_MTU".
  if (mtu) pf |= bit(ProtocolFeature.NET_MTU);
  return pf;
}

export interface NetDriverOptions {
  /** Socket path (listened on, or connected to with `client`). */
  path?: string;
  /** Inherited listening socket (`--fd=N`). */
  fd?: number;
  /** Connect to `path` (QEMU/testpmd listening) instead of listening. */
  client?: boolean;
  /** Client mode: redial when the front-end goes away (default true with `client`). */
  reconnect?: boolean;
  /** Queue pairs offered (default 1; MQ is offered when > 1). */
  queuePairs?: number;
  /** Processing module: a shipped name ('echo', ...), a path to a compiled module, or a URL. Default 'echo'. */
  module?: string | URL;
  /** Options for the module (`ctx.options`). */
  moduleOptions?: Record<string, string>;
  /** Offer VIRTIO_NET_F_MAC with this address in the config space. */
  mac?: string | Uint8Array;
  /** Offer VIRTIO_NET_F_MTU with this MTU in the config space (and accept NET_SET_MTU). */
  mtu?: number;
  /** Offer VIRTIO_F_IN_ORDER (default: true for the shipped modules, which complete in order; false for others). */
  inOrder?: boolean;
  /** Offer VIRTIO_F_RING_PACKED (default true). */
  packed?: boolean;
  /** Vrings per worker, even (default 2: one worker per queue pair). */
  queuesPerWorker?: number;
  /** CPUs to pin the workers to. */
  cpus?: number[];
  /** Busy-poll time of the workers, µs. */
  spinUs?: number;
  /** Chains per burst. */
  burstSize?: number;
  /** Share one manager between several drivers (ports). */
  manager?: QueueWorkerManager;
  logger?: Logger;
  /** Control-plane callback timeout, ms. */
  callbackTimeoutMs?: number;
  /** More callbacks of the caller (run after the data plane on start, before it on stop). */
  callbacks?: VhostCallbacks;
  /** The device's workers are running (e.g. the switch's fabric is attached here). Errors are logged. */
  onDeviceStarted?: (dev: VhostDevice, workers: DeviceWorkers) => void | Promise<void>;
}

/** Per queue pair figures (cumulative). */
export interface NetQueueStats {
  /** Queue pair number. */
  pair: number;
  /** Frames and bytes the guest sent (TX vring 2i+1). */
  txPackets: number;
  txBytes: number;
  txErrors: number;
  /** Frames and bytes delivered to the guest (RX vring 2i). */
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  rxMerged: number;
  /** Wake-ups of the worker serving the pair (shared when a worker serves several pairs). */
  wakeups: number;
  /** Kicks forwarded for the pair's two vrings. */
  kicks: number;
  /** Interrupts (call eventfd writes) sent for the pair's two vrings. */
  calls: number;
}

export interface NetDeviceStats {
  /** Device (connection) id. */
  device: number;
  socketPath: string;
  queues: NetQueueStats[];
  /** The module's own counters (summed over workers), e.g. the responder's arpReplies. */
  module: Record<string, number>;
}

/** A vhost-user virtio-net back-end. */
export class NetDriver {
  readonly vhost: VhostUserDriver;
  readonly dataPlane: DataPlane;
  readonly queuePairs: number;
  /** Offered virtio features. */
  readonly features: bigint;
  readonly module: { url: URL; shipped: boolean; name: string };
  readonly mac: Uint8Array | null;
  readonly mtu: number | null;
  private readonly logger: Logger;

  constructor(o: NetDriverOptions) {
    const qp = o.queuePairs ?? 1;
    if (!Number.isInteger(qp) || qp < 1 || qp > 128) throw new RangeError(`queue pairs ${qp} outside 1..128`);
    const qpw = o.queuesPerWorker ?? 2;
    if (!Number.isInteger(qpw) || qpw < 2 || qpw % 2 !== 0) throw new RangeError(`queuesPerWorker ${qpw} must be an even number >= 2 (whole queue pairs)`);
    if (o.mtu !== undefined && (!Number.isInteger(o.mtu) || o.mtu < 68 || o.mtu > 65535)) throw new RangeError(`MTU ${o.mtu} outside 68..65535`);
    this.queuePairs = qp;
    this.module = resolveNetModule(o.module ?? 'echo');
    this.mac = o.mac === undefined ? null : typeof o.mac === 'string' ? parseMac(o.mac) : Uint8Array.from(o.mac);
    if (this.mac !== null && this.mac.length !== 6) throw new RangeError('MAC must be 6 bytes');
    this.mtu = o.mtu ?? null;
    this.logger = o.logger ?? stderrLogger();
    this.features = netFeatures({
      queuePairs: qp,
      mtu: this.mtu !== null,
      mac: this.mac !== null,
      inOrder: o.inOrder ?? this.module.shipped,
      ...(o.packed !== undefined ? { packed: o.packed } : {}),
    });
    const config: ConfigSpace = {
      get: (dev, offset, size) => {
        const bytes = encodeNetConfig(this.config(dev));
        const out = new Uint8Array(size);
        if (offset < bytes.length) out.set(bytes.subarray(offset, Math.min(bytes.length, offset + size)));
        return out;
      },
    };
    this.vhost = new VhostUserDriver({
      ...(o.path !== undefined ? { path: o.path } : {}),
      ...(o.fd !== undefined ? { fd: o.fd } : {}),
      ...(o.client === true ? { client: true, reconnect: o.reconnect ?? true } : {}),
      maxQueues: 2 * qp,
      queueNum: qp,
      // A front-end may leave pairs beyond the first disabled (MQ): pair 0 is enough to start.
      requiredQueues: 2,
      features: this.features,
      protocolFeatures: netProtocolFeatures(this.mtu !== null),
      config,
      logger: this.logger,
      ...(o.callbackTimeoutMs !== undefined ? { callbackTimeoutMs: o.callbackTimeoutMs } : {}),
    });
    const user = o.callbacks ?? {};
    const started = o.onDeviceStarted;
    this.dataPlane = attachDataPlane(this.vhost, {
      module: this.module.url,
      moduleOptions: o.moduleOptions ?? {},
      queuesPerWorker: qpw,
      numRings: 2 * qp,
      logger: this.logger,
      ...(o.cpus !== undefined && o.cpus.length > 0 ? { cpus: o.cpus } : {}),
      ...(o.spinUs !== undefined ? { spinUs: o.spinUs } : {}),
      ...(o.burstSize !== undefined ? { burstSize: o.burstSize } : {}),
      ...(o.manager !== undefined ? { manager: o.manager } : {}),
      callbacks: {
        ...user,
        newDevice: async (dev) => {
          this.logger.info(`${this.vhost.path}: device ${dev.id} started (${this.module.name}, features 0x${dev.features.toString(16)})`);
          const w = this.dataPlane.workers(dev);
          if (started !== undefined && w !== undefined) {
            try {
              await started(dev, w);
            } catch (e) {
              this.logger.error(`${this.vhost.path}: device ${dev.id}: start hook failed: ${(e as Error).message}`);
            }
          }
          await user.newDevice?.(dev);
        },
        sendRarp: async (dev, mac) => {
          await user.sendRarp?.(dev, mac);
          const ok = await this.announce(dev, mac).catch((e: unknown) => {
            this.logger.warn(`${this.vhost.path}: device ${dev.id}: RARP announcement failed: ${(e as Error).message}`);
            return false;
          });
          this.logger.info(`${this.vhost.path}: device ${dev.id}: SEND_RARP ${formatMac(mac)}${ok ? '' : ' (not delivered)'}`);
        },
        mtuChanged: async (dev, mtu) => {
          if (this.mtu === null) throw new Error('NET_SET_MTU without VIRTIO_NET_F_MTU');
          this.logger.info(`${this.vhost.path}: device ${dev.id}: MTU ${mtu}`);
          await user.mtuChanged?.(dev, mtu);
        },
      },
    });
  }

  /** Starts listening (or connecting). */
  async start(): Promise<void> {
    await this.vhost.start();
  }

  /** Closes the socket and every connection; every worker, fd and mapping is released when this resolves. */
  async stop(): Promise<void> {
    await this.vhost.stop();
    await this.dataPlane.stopAll();
  }

  /** Devices of the current connections. */
  get devices(): readonly VhostDevice[] {
    return this.vhost.devices;
  }

  /** The workers of a running device. */
  workers(dev: VhostDevice): DeviceWorkers | undefined {
    return this.dataPlane.workers(dev);
  }

  /** The config space a device sees: MAC, link up, queue pairs, MTU (the front-end's NET_SET_MTU wins). */
  config(dev?: VhostDevice): NetConfig {
    return {
      mac: this.mac ?? new Uint8Array(6),
      status: VIRTIO_NET_S_LINK_UP,
      maxVirtqueuePairs: this.queuePairs,
      mtu: dev?.mtu ?? this.mtu ?? 1500,
    };
  }

  /**
   * Announces `mac` (SEND_RARP after a migration): the module of the worker
   * serving queue pair 0 injects a gratuitous RARP (see each module). Resolves
   * false when the device is not running or the frame was dropped.
   */
  async announce(dev: VhostDevice, mac: Uint8Array): Promise<boolean> {
    const w = this.dataPlane.workers(dev);
    if (w === undefined) return false;
    return (await w.remote(0).call('announce', Array.from(mac))) === true;
  }

  /** Cumulative per-queue-pair counters of every running device (module stats through comlink: control rate only). */
  async stats(): Promise<NetDeviceStats[]> {
    const out: NetDeviceStats[] = [];
    for (const dev of this.devices) {
      const w = this.dataPlane.workers(dev);
      if (w === undefined) continue;
      const ds = w.stats();
      const queues: NetQueueStats[] = [];
      const module: Record<string, number> = {};
      await Promise.all(
        ds.workers.map(async (ws) => {
          let ms: Record<string, number> = {};
          try {
            ms = await w.remote(ws.workerIndex).moduleStats();
          } catch {
            // The worker is stopping: its pairs report zeros this time.
          }
          for (const [k, v] of Object.entries(ms)) {
            if (k.startsWith('q') || (NET_STAT_NAMES as readonly string[]).includes(k)) continue;
            module[k] = (module[k] ?? 0) + v;
          }
          const firstPair = (ws.workerIndex * w.queuesPerWorker) / 2;
          for (let p = firstPair; p < firstPair + w.queuesPerWorker / 2 && p < this.queuePairs; p++) {
            const q: NetQueueStats = { pair: p, txPackets: 0, txBytes: 0, txErrors: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0, rxMerged: 0, wakeups: ws.wakeups, kicks: 0, calls: 0 };
            for (const n of NET_STAT_NAMES) q[n] = ms[`q${p}.${n}`] ?? 0;
            for (const r of ws.rings) {
              if (r.index === 2 * p || r.index === 2 * p + 1) {
                q.kicks += r.kicks;
                q.calls += r.calls;
              }
            }
            queues.push(q);
          }
        }),
      );
      queues.sort((a, b) => a.pair - b.pair);
      out.push({ device: dev.id, socketPath: dev.socketPath, queues, module });
    }
    return out;
  }
}
