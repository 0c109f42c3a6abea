/**
 * Shared parts of the blk benchmarks: back-end processes (`vhost-ts blk`,
 * qemu-storage-daemon) pinned with taskset, and a minimal polling virtio-blk
 * driver over the built-in front-end's device (FrontendDevice does the
 * vhost-user start sequence; this loop keeps `qd` requests in flight on
 * vring 0, re-submitting each slot as soon as its completion is seen, with
 * guest notifications off, as a polling guest driver would).
 */
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { native } from '@vhost-ts/native';
import { openBlkDevice, type FrontendDevice } from '@vhost-ts/frontend';
import { ManagedProcess, socketPath, storageDaemonArgs, waitForPath } from '@vhost-ts/peers';
import { createUsedBuffer } from '@vhost-ts/virtio';

export const MiB = 1024 * 1024;
const MAIN = path.resolve(import.meta.dirname, '../../packages/cli/dist/main.js');

/** Parses `--name=value` / `--name value` options into a record (bench-local, no validation beyond numbers). */
export function benchArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) out[a.slice(2)] = argv[++i]!;
    else out[a.slice(2)] = '1';
  }
  return out;
}

/** Creates a backing file of `bytes` filled with non-zero data (so reads are not served from holes). */
export function createFilledFile(file: string, bytes: number): void {
  const fd = openSync(file, 'w');
  try {
    const chunk = Buffer.alloc(4 * MiB);
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0 || 1, i);
    for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off), off);
    // Written back before measuring: no flusher threads competing with the first run.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export interface Backend {
  name: string;
  sock: string;
  proc: ManagedProcess;
}

/** `taskset -c CPUS cmd...` when CPUS is given. */
function pinned(cpus: string | undefined, file: string, args: string[]): [string, string[]] {
  return cpus === undefined ? [file, args] : ['taskset', ['-c', cpus, file, ...args]];
}

/** Starts `vhost-ts blk` on `file` (one request queue) and waits for its socket. */
export async function startVhostTs(dir: string, file: string, extra: string[], cpus?: string, name = 'vhost-ts blk'): Promise<Backend> {
  const sock = socketPath(dir, `vts-${process.hrtime.bigint()}.sock`);
  const [bin, args] = pinned(cpus, process.execPath, [MAIN, 'blk', `--socket-path=${sock}`, `--blk-file=${file}`, '--stats-interval=0', '--quiet', ...extra]);
  const proc = new ManagedProcess(bin, args, { name });
  await waitForPath(sock, { timeoutMs: 15_000, abortIf: () => (proc.running ? undefined : proc.describe()) });
  return { name, sock, proc };
}

/** Starts qemu-storage-daemon exporting `file` as vhost-user-blk (one queue, page cache like vhost-ts). */
export async function startQsd(dir: string, file: string, cpus?: string): Promise<Backend> {
  const sock = socketPath(dir, `qsd-${process.hrtime.bigint()}.sock`);
  const [bin, args] = pinned(cpus, 'qemu-storage-daemon', storageDaemonArgs({ imagePath: file, socketPath: sock, numQueues: 1 }));
  const proc = new ManagedProcess(bin, args, { name: 'qemu-storage-daemon' });
  await waitForPath(sock, { timeoutMs: 15_000, abortIf: () => (proc.running ? undefined : proc.describe()) });
  return { name: 'qemu-storage-daemon', sock, proc };
}

export interface Workload {
  name: string;
  write: boolean;
  random: boolean;
  /** Request bytes. */
  bs: number;
  /** Requests in flight. */
  qd: number;
}

export const WORKLOADS: Record<string, Workload> = {
  randread4k: { name: '4k-randread-qd32', write: false, random: true, bs: 4096, qd: 32 },
  randwrite4k: { name: '4k-randwrite-qd32', write: true, random: true, bs: 4096, qd: 32 },
  seqread1m: { name: '1m-seqread-qd4', write: false, random: false, bs: MiB, qd: 4 },
  seqwrite1m: { name: '1m-seqwrite-qd4', write: true, random: false, bs: MiB, qd: 4 },
  randread4kqd1: { name: '4k-randread-qd1', write: false, random: true, bs: 4096, qd: 1 },
};

export interface Result {
  backend: string;
  workload: string;
  seconds: number;
  ios: number;
  iops: number;
  mbPerSec: number;
  errors: number;
  /** CPU time the back-end process (all its threads) used during the run. */
  backendCpuSeconds: number;
  /** Back-end CPU per request, µs: what a request costs, much less sensitive to a busy machine than IOPS. */
  cpuUsPerIo: number;
}

const CLK_TCK = 100;

/** utime + stime of a process (all threads), seconds; NaN when unreadable. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/** A connected device with request slots for up to 32 x 1 MiB requests. */
export interface BenchDevice {
  dev: FrontendDevice;
  metaGpa: number;
  metaOff: number;
  dataGpa: number;
  dataOff: number;
  u8: Uint8Array;
  dv: DataView;
}

const MAX_QD = 32;
const MAX_BS = MiB;
const META = 32; // header (16) + status byte in its own 16

export async function openBenchDevice(sock: string): Promise<BenchDevice> {
  const dev = await openBlkDevice({ socketPath: sock, queues: 1, queueSize: 256, eventIdx: true, memory: 128 * MiB, regions: 1 });
  const meta = dev.memory.allocator.alloc(MAX_QD * META, 64);
  const data = dev.memory.allocator.alloc(MAX_QD * MAX_BS, 4096);
  const m = dev.memory.locate(meta.gpa, meta.size);
  const d = dev.memory.locate(data.gpa, data.size);
  if (m.region !== d.region) throw new Error('bench: request areas in two regions');
  d.region.u8.fill(0x5a, d.offset, d.offset + data.size);
  return { dev, metaGpa: meta.gpa, metaOff: m.offset, dataGpa: data.gpa, dataOff: d.offset, u8: m.region.u8, dv: m.region.dv };
}

/**
 * Runs one workload for `seconds` over the first `spanBytes` of the disk and
 * returns completions per second and bytes per second. Every status byte is
 * checked.
 */
export async function runWorkload(b: BenchDevice, backend: string, w: Workload, seconds: number, spanBytes: number, pid = -1): Promise<Result> {
  if (w.qd > MAX_QD || w.bs > MAX_BS) throw new RangeError('workload beyond the bench slots');
  const v = b.dev.vrings[0]!;
  const ring = v.ring;
  ring.disableCallbacks();
  const used = createUsedBuffer<number>();
  const addrs = [0, 0, 0];
  const lens = [16, w.bs, 1];
  const out = w.write ? 2 : 1;
  const blocks = Math.floor(spanBytes / w.bs);
  let rng = 0x9e3779b9;
  let seq = 0;
  const submit = (slot: number): void => {
    let block: number;
    if (w.random) {
      rng ^= rng << 13;
      rng ^= rng >>> 17;
      rng ^= rng << 5;
      block = (rng >>> 0) % blocks;
    } else {
      block = seq;
      seq = (seq + 1) % blocks;
    }
    const sector = (block * w.bs) / 512;
    const h = b.metaOff + slot * META;
    b.dv.setUint32(h, w.write ? 1 : 0, true);
    b.dv.setUint32(h + 4, 0, true);
    b.dv.setUint32(h + 8, sector >>> 0, true);
    b.dv.setUint32(h + 12, Math.floor(sector / 2 ** 32), true);
    b.u8[h + 16] = 0xff;
    addrs[0] = b.metaGpa + slot * META;
    addrs[1] = b.dataGpa + slot * MAX_BS;
    addrs[2] = b.metaGpa + slot * META + 16;
    if (ring.add(addrs, lens, out, 3 - out, slot) < 0) throw new Error('bench: ring full');
  };
  for (let s = 0; s < w.qd; s++) submit(s);
  if (ring.needsKick()) native.eventfdWrite(v.kickFd, 1);
  let ios = 0;
  let errors = 0;
  const cpu0 = processCpuSeconds(pid);
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let spins = 0;
  let stopping = false;
  let outstanding = w.qd;
  for (;;) {
    let n = 0;
    while (ring.getUsed(used)) {
      const slot = used.token!;
      if (b.u8[b.metaOff + slot * META + 16] !== 0) errors++;
      outstanding--;
      n++;
      if (!stopping) {
        ios++;
        submit(slot);
        outstanding++;
      }
    }
    if (n > 0 && !stopping && ring.needsKick()) native.eventfdWrite(v.kickFd, 1);
    if ((++spins & 255) === 0 || n > 0) {
      const now = performance.now();
      if (!stopping && now >= end) stopping = true;
      if (stopping && outstanding === 0) break;
      if (now > end + 10_000) throw new Error(`${backend} ${w.name}: ${outstanding} requests not completed 10 s after the end`);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = processCpuSeconds(pid) - cpu0;
  return {
    backend,
    workload: w.name,
    seconds: secs,
    ios,
    iops: ios / secs,
    mbPerSec: (ios * w.bs) / secs / MiB,
    errors,
    backendCpuSeconds: cpu,
    cpuUsPerIo: (cpu * 1e6) / Math.max(1, ios),
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Prints a table of medians with the min..max range: rows workloads, columns back-ends (4k: IOPS, 1m: MB/s). */
export function printTable(results: Result[], metric: 'rate' | 'cpu' = 'rate'): void {
  const backends = [...new Set(results.map((r) => r.backend))];
  const workloads = [...new Set(results.map((r) => r.workload))];
  const w0 = Math.max(...workloads.map((w) => w.length), 8);
  const W = 34;
  console.log(`${'workload'.padEnd(w0)}  ${backends.map((b) => b.padStart(W)).join('')}`);
  for (const w of workloads) {
    const mb = w.startsWith('1m');
    const unit = metric === 'cpu' ? 'us/IO' : mb ? 'MB/s' : 'IOPS';
    const cells = backends.map((b) => {
      const xs = results.filter((r) => r.backend === b && r.workload === w).map((r) => (metric === 'cpu' ? r.cpuUsPerIo : mb ? r.mbPerSec : r.iops));
      if (xs.length === 0) return '-'.padStart(W);
      return `${median(xs).toFixed(0)} ${unit} [${Math.min(...xs).toFixed(0)}..${Math.max(...xs).toFixed(0)}]`.padStart(W);
    });
    console.log(`${w.padEnd(w0)}  ${cells.join('')}`);
  }
}
