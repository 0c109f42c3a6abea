/**
 * The virtio-blk processing module: one queue worker serves one (or a group
 * of) request queue(s) of a blk device. Loaded by path by the queue-worker
 * runtime (`blkModuleUrl` in @vhost-ts/blk).
 *
 * Module options (strings, `moduleOptions` of the data plane):
 * - `path` (required): the backing file or block device; each worker opens it.
 * - `capacity`: device size in bytes (default: the backing store's size,
 *   rounded down to the block size).
 * - `blockSize`: logical block size, 512 (default) .. 4096.
 * - `readOnly`: `1` opens the store read-only; writes answer IOERR.
 * - `writeback`: `0` = write-through (every write is followed by fdatasync).
 * - `serial`: the GET_ID string (at most 20 bytes).
 * - `io`: `sync` (default) or `async` (see engine.ts).
 * - `completionDelayMs`: fault injection for tests (with `io=async`): hold
 *   every completion this long, so a killed back-end has requests in flight.
 * - `maxDiscardSectors`, `maxDiscardSeg`, `maxWriteZeroesSectors`, `maxWriteZeroesSeg`:
 *   the limits advertised in the config space (defaults as config.ts).
 *
 * The inflight area (INFLIGHT_SHMFD) is not a string: the data plane gives it
 * as `ctx.inflight` (an {@link InflightAreaSpec}, or null) when its runtime
 * carries one, or through the module's rpc `setInflight(area | null)`. With
 * the option `inflight=wait` every ring that starts is held (nothing popped)
 * until that call, so a data plane that starts the rings with the workers
 * (attachDataPlane) can still hand the area over before the first pop. Control through the runtime's comlink remote: `configure({ capacity,
 * writeback })` after a resize or a SET_CONFIG, `moduleStats()`, and rpc
 * `counters()` (per-vring counters).
 */
import { closeSync } from 'node:fs';
import { defineModule, type QueueContext, type QueueModule } from '@vhost-ts/workers/module-api';
import { backingSize, openBacking } from '../backing.js';
import {
  DEFAULT_MAX_DISCARD_SECTORS,
  DEFAULT_MAX_DWZ_SEG,
  DEFAULT_MAX_WRITE_ZEROES_SECTORS,
  checkBlockSize,
  exposedCapacity,
} from '../config.js';
import { BlkEngine, type IoMode } from '../engine.js';
import type { InflightAreaSpec } from '../inflight.js';
import { BLK_SECTOR_SIZE as SECTOR_SIZE } from '@vhost-ts/virtio';

function intOption(o: Readonly<Record<string, string>>, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v)) throw new RangeError(`blk module option ${name}=${v} is not a whole number`);
  const n = Number(v);
  if (n < min || n > max) throw new RangeError(`blk module option ${name}=${v} outside ${min}..${max}`);
  return n;
}

function flagOption(o: Readonly<Record<string, string>>, name: string, dflt: boolean): boolean {
  const v = o[name];
  if (v === undefined || v === '') return dflt;
  if (v === '1' || v === 'true' || v === 'on') return true;
  if (v === '0' || v === 'false' || v === 'off') return false;
  throw new RangeError(`blk module option ${name}=${v} is not a boolean (1/0)`);
}

/** Checks an inflight area handed over by the data plane. */
export function isInflightAreaSpec(v: unknown): v is InflightAreaSpec {
  if (v === null || typeof v !== 'object') return false;
  const a = v as Partial<InflightAreaSpec>;
  return (
    a.sab instanceof SharedArrayBuffer &&
    Number.isInteger(a.offset) &&
    Number.isInteger(a.queueRegionSize) &&
    Number.isInteger(a.numQueues) &&
    Number.isInteger(a.queueSize) &&
    typeof a.packed === 'boolean'
  );
}

/** The module factory (exported for in-process tests). */
export async function createBlkModule(ctx: QueueContext): Promise<QueueModule> {
  const o = ctx.options;
  const path = o.path;
  if (path === undefined || path === '') throw new Error('blk module: option path (backing file) is required');
  const readOnly = flagOption(o, 'readOnly', false);
  const blockSize = intOption(o, 'blockSize', SECTOR_SIZE, 512, 4096);
  checkBlockSize(blockSize);
  const io = (o.io ?? 'sync') as IoMode;
  if (io !== 'sync' && io !== 'async') throw new RangeError(`blk module option io=${String(io)}: sync or async`);
  const backing = openBacking(path, readOnly);
  let closed = false;
  try {
    const capacity = intOption(o, 'capacity', exposedCapacity(backing.size, blockSize));
    if (capacity > backing.size) throw new RangeError(`blk module: capacity ${capacity} exceeds the backing store's ${backing.size} bytes`);
    const engine = new BlkEngine(
      {
        fd: backing.fd,
        capacityBytes: exposedCapacity(capacity, blockSize),
        blockSize,
        readOnly,
        writeback: flagOption(o, 'writeback', true),
        serial: o.serial ?? '',
        maxDiscardSectors: intOption(o, 'maxDiscardSectors', DEFAULT_MAX_DISCARD_SECTORS, 1, 0xffffffff),
        maxDiscardSeg: intOption(o, 'maxDiscardSeg', DEFAULT_MAX_DWZ_SEG, 1, 4096),
        maxWriteZeroesSectors: intOption(o, 'maxWriteZeroesSectors', DEFAULT_MAX_WRITE_ZEROES_SECTORS, 1, 0xffffffff),
        maxWriteZeroesSeg: intOption(o, 'maxWriteZeroesSeg', DEFAULT_MAX_DWZ_SEG, 1, 4096),
        io,
        completionDelayMs: intOption(o, 'completionDelayMs', 0, 0, 60_000),
        warn: (m) => ctx.log.warn(m),
      },
      () => ctx.newChain(),
    );
    // The inflight area: from the context when the runtime carries one ('inflight' in ctx, null = none),
    // else through rpc setInflight; with inflight=wait the rings are held until that call.
    if ('inflight' in ctx) {
      const fromCtx = (ctx as QueueContext & { inflight?: unknown }).inflight;
      engine.setInflightArea(isInflightAreaSpec(fromCtx) ? fromCtx : null);
    } else if (o.inflight === 'wait') engine.holdForInflight();
    if (io === 'async') ctx.setEventLoop(true);

    const mod: QueueModule & { engine: BlkEngine } = {
      engine,
      process(burst) {
        engine.processBurst(burst.ring, burst.chains, burst.count);
      },
      poll() {
        return engine.poll();
      },
      ringStarted(ring) {
        engine.ringStarted(ring);
      },
      ringStopped(ring) {
        engine.ringStopped(ring);
      },
      configure(options) {
        if (options.capacity !== undefined) {
          const bytes = intOption(options, 'capacity', 0);
          const size = backingSize(backing.fd);
          if (bytes > size) throw new RangeError(`capacity ${bytes} exceeds the backing store's ${size} bytes`);
          engine.setCapacity(exposedCapacity(bytes, blockSize));
        }
        if (options.writeback !== undefined) engine.setWriteback(flagOption(options, 'writeback', true));
      },
      stats() {
        const out: Record<string, number> = {};
        for (const [index, c] of engine.counters()) {
          for (const [k, v] of Object.entries(c)) out[`vring${index}.${k}`] = v;
          const ring = ctx.ring(index);
          out[`vring${index}.available`] = ring?.available() ?? 0;
        }
        return out;
      },
      rpc: {
        setInflight(area: InflightAreaSpec | null): void {
          if (area !== null && !isInflightAreaSpec(area)) throw new TypeError('setInflight: not an inflight area');
          engine.setInflightArea(area);
        },
        counters() {
          return Object.fromEntries(engine.counters());
        },
      },
      async close() {
        // Async I/O still running must not see its fd closed (or reused) under it.
        for (let i = 0; i < 500 && engine.inflight > 0; i++) await new Promise((r) => setTimeout(r, 1));
        if (!closed) {
          closed = true;
          closeSync(backing.fd);
        }
      },
    };
    return mod;
  } catch (e) {
    if (!closed) closeSync(backing.fd);
    throw e;
  }
}

export default defineModule(createBlkModule);
