import { execFile as execFileCb, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { isStaticElf, repoRoot, requireBinaries, uniqueId, which, withLock, type Availability } from './util.js';

const execFile = promisify(execFileCb);

/**
 * Modules the guest loads, in dependency order. Any that the kernel has built in are skipped.
 */
export const DEFAULT_GUEST_MODULES: readonly string[] = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_blk',
];

/** Bumped when the kernel cache layout changes. */
const KERNEL_CACHE_FORMAT = 2;

/** Bumped when the initramfs layout or /init changes, so cached images are rebuilt. */
const INITRAMFS_FORMAT = 1;

export interface GuestKernel {
  /** Debian package it came from, e.g. `linux-image-6.1.0-56-amd64`. */
  package: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-56-amd64`. */
  version: string;
  /** Path of the kernel image (bzImage). */
  vmlinuz: string;
  /**
   * The uncompressed kernel (ELF with a PVH entry note), when it could be extracted from the
   * bzImage: QEMU boots it directly (no firmware real-mode path, no in-guest decompression),
   * which saves about 6 s per boot under TCG.
   */
  vmlinux?: string;
  /** Loadable modules in load order (decompressed `.ko` files in the cache). */
  modules: Array<{ name: string; file: string }>;
  /** Requested modules that are built into this kernel. */
  builtin: string[];
}

export interface GuestImage {
  /** What to pass to `-kernel`: the PVH ELF when available (faster under TCG), else the bzImage. */
  kernel: string;
  /** The bzImage, always. */
  bzImage: string;
  initrd: string;
  kernelVersion: string;
  /** Modules /init loads, in order. */
  modules: string[];
}

export interface BuildGuestOptions {
  /**
   * Shell code (busybox ash) that /init runs after mounting /proc, /sys, /dev and loading the
   * modules; the guest powers off when it returns. `mark NAME VALUE...` prints a marker line
   * (`@@NAME VALUE...`) that {@link parseMarkers} reads on the host. /init prints `@@boot`
   * before and `@@exit STATUS` after the script.
   */
  script: string;
  /** Cache directory (default `$VHOST_TS_GUEST_CACHE` or `<repo>/test/.guest`). */
  cacheDir?: string;
  /** Modules to load (default {@link DEFAULT_GUEST_MODULES}). */
  modules?: readonly string[];
  /** Kernel package (default: what `linux-image-amd64` depends on, per `apt-cache depends`). */
  kernelPackage?: string;
  /** Extra files in the initramfs: absolute guest path → content. */
  files?: Record<string, string | Uint8Array>;
  /** busybox binary to use (must be static; default `/bin/busybox` from busybox-static). */
  busybox?: string;
  /**
   * Boot the uncompressed kernel through its PVH entry point when possible (default true).
   * false: boot the bzImage as a bootloader would (about 6 s slower under TCG).
   */
  pvh?: boolean;
}

/** `{ ok: true }` when a guest can be built: apt-get, apt-cache, dpkg and a static busybox. */
export function isGuestBuildAvailable(busybox = '/bin/busybox'): Availability {
  const bins = requireBinaries([
    { bin: 'apt-get', pkg: 'apt' },
    { bin: 'apt-cache', pkg: 'apt' },
    { bin: 'dpkg', pkg: 'dpkg' },
  ]);
  if (!bins.ok) return bins;
  if (!existsSync(busybox)) return { ok: false, reason: `${busybox} not found (Debian package busybox-static)` };
  try {
    if (!isStaticElf(busybox)) return { ok: false, reason: `${busybox} is dynamically linked: install busybox-static` };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  return { ok: true };
}

/** The default cache directory for guest artifacts (gitignored). */
export function defaultGuestCacheDir(): string {
  const env = process.env.VHOST_TS_GUEST_CACHE;
  return env !== undefined && env.length > 0 ? path.resolve(env) : path.join(repoRoot(), 'test', '.guest');
}

/** The exact kernel package `linux-image-amd64` depends on (e.g. `linux-image-6.1.0-56-amd64`). */
export async function resolveKernelPackage(meta = 'linux-image-amd64'): Promise<string> {
  const { stdout } = await execFile('apt-cache', ['depends', meta], { maxBuffer: 1 << 20 });
  for (const line of stdout.split('\n')) {
    const m = line.match(/^\s*\|?Depends:\s*(linux-image-\d\S*)/);
    if (m?.[1] !== undefined) return m[1];
  }
  throw new Error(`cannot find the kernel package ${meta} depends on (run apt-get update?):\n${stdout}`);
}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function findModulesRoot(root: string): Promise<{ dir: string; version: string }> {
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const d = path.join(root, base);
    let entries: string[];
    try {
      entries = await readdir(d);
    } catch {
      continue;
    }
    const v = entries.find((e) => /^\d/.test(e));
    if (v !== undefined) return { dir: path.join(d, v), version: v };
  }
  throw new Error(`no lib/modules/<version> in the unpacked kernel package at ${root}`);
}

/** Normalises module names: `-` and `_` are the same to the kernel. */
function modName(file: string): string {
  return path.basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

async function decompressModule(src: string, dst: string): Promise<void> {
  if (src.endsWith('.ko')) {
    await copyFile(src, dst);
  } else if (src.endsWith('.ko.gz')) {
    await writeFile(dst, gunzipSync(await readFile(src)));
  } else if (src.endsWith('.ko.xz')) {
    // busybox's insmod may not read xz modules: decompress on the host (xz-utils or busybox).
    const xz = which('xz');
    const { stdout } = xz
      ? await execFile(xz, ['-dc', src], { encoding: 'buffer', maxBuffer: 1 << 28 })
      : await execFile('busybox', ['unxz', '-c', src], { encoding: 'buffer', maxBuffer: 1 << 28 });
    await writeFile(dst, stdout);
  } else if (src.endsWith('.ko.zst')) {
    const { stdout } = await execFile('zstd', ['-dc', src], { encoding: 'buffer', maxBuffer: 1 << 28 });
    await writeFile(dst, stdout);
  } else {
    throw new Error(`unknown module format: ${src}`);
  }
}

/**
 * Makes sure the guest kernel and the requested modules are in the cache: downloads the kernel
 * package with `apt-get download` (into `<cache>/debs/`, deleted after use), unpacks it with
 * `dpkg -x`, copies the kernel image, its PVH ELF and the modules (decompressed) to
 * `<cache>/kernel-<pkg>-<hash>/`.
 */
export async function ensureGuestKernel(
  options: { cacheDir?: string; kernelPackage?: string; modules?: readonly string[] } = {},
): Promise<GuestKernel> {
  const cacheDir = options.cacheDir ?? defaultGuestCacheDir();
  const wanted = [...(options.modules ?? DEFAULT_GUEST_MODULES)].map((m) => m.replace(/-/g, '_'));
  await mkdir(cacheDir, { recursive: true });
  const suffix = sha256(`v${KERNEL_CACHE_FORMAT}:${wanted.join(',')}`).slice(0, 12);
  let pkg = options.kernelPackage;
  if (pkg === undefined) {
    try {
      pkg = await resolveKernelPackage();
    } catch (e) {
      // No apt lists (offline, or a CI image without `apt-get update`): use a cached kernel.
      const cachedDirs = (await readdir(cacheDir)).filter((d) => d.startsWith('kernel-') && d.endsWith(`-${suffix}`)).sort();
      for (const d of cachedDirs.reverse()) {
        const k = await readManifest(path.join(cacheDir, d, 'manifest.json'));
        if (k !== undefined) return k;
      }
      throw e;
    }
  }
  const kdir = path.join(cacheDir, `kernel-${pkg}-${suffix}`);
  const manifestPath = path.join(kdir, 'manifest.json');
  const cached = await readManifest(manifestPath);
  if (cached !== undefined) return cached;

  return withLock(path.join(cacheDir, '.lock-kernel'), async () => {
    const again = await readManifest(manifestPath);
    if (again !== undefined) return again;
    const deb = await ensureDeb(cacheDir, pkg);
    const work = path.join(cacheDir, `.work-${uniqueId('k')}`);
    try {
      const unpacked = path.join(work, 'x');
      await mkdir(unpacked, { recursive: true });
      await execFile('dpkg', ['-x', deb, unpacked], { maxBuffer: 1 << 24 });
      const { dir: modDir, version } = await findModulesRoot(unpacked);
      const vmlinuzSrc = path.join(unpacked, 'boot', `vmlinuz-${version}`);
      if (!existsSync(vmlinuzSrc)) throw new Error(`${pkg}: no boot/vmlinuz-${version}`);
      const order = (await readFile(path.join(modDir, 'modules.order'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
      const builtinList = (await readFile(path.join(modDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
      const builtinNames = new Set(builtinList.map(modName));
      const stage = path.join(work, 'out');
      await mkdir(path.join(stage, 'modules'), { recursive: true });
      await copyFile(vmlinuzSrc, path.join(stage, 'vmlinuz'));
      const pvh = await extractPvhKernel(vmlinuzSrc, path.join(stage, 'vmlinux')).catch((e: unknown) => {
        process.emitWarning(`guest kernel: no PVH ELF (${(e as Error).message}); booting the bzImage`);
        return false;
      });
      const modules: Array<{ name: string; file: string }> = [];
      const builtin: string[] = [];
      for (const name of wanted) {
        const rel = order.find((l) => modName(l) === name);
        if (rel === undefined) {
          if (builtinNames.has(name)) {
            builtin.push(name);
            continue;
          }
          throw new Error(`module ${name} is neither in modules.order nor built into ${pkg}`);
        }
        // modules.order names the uncompressed .ko; the file may carry a compression suffix.
        const base = path.join(modDir, rel.replace(/\.ko(\.(xz|zst|gz))?$/, '.ko'));
        const src = ['', '.xz', '.zst', '.gz'].map((s) => base + s).find((f) => existsSync(f));
        if (src === undefined) throw new Error(`module file for ${name} (${rel}) missing in ${pkg}`);
        await decompressModule(src, path.join(stage, 'modules', `${name}.ko`));
        modules.push({ name, file: `modules/${name}.ko` });
      }
      await writeFile(
        path.join(stage, 'manifest.json'),
        JSON.stringify({ package: pkg, version, vmlinuz: 'vmlinuz', ...(pvh ? { vmlinux: 'vmlinux' } : {}), modules, builtin }, null, 2),
      );
      await rm(kdir, { recursive: true, force: true });
      await rename(stage, kdir);
    } finally {
      await rm(work, { recursive: true, force: true });
      // The .deb (~70 MB) is only needed again for another module set: not worth caching.
      await rm(deb, { force: true });
    }
    const done = await readManifest(manifestPath);
    if (done === undefined) throw new Error(`failed to build ${kdir}`);
    return done;
  });
}

async function readManifest(manifestPath: string): Promise<GuestKernel | undefined> {
  let raw: string;
  try {
    raw = await readFile(manifestPath, 'utf8');
  } catch {
    return undefined;
  }
  const dir = path.dirname(manifestPath);
  const m = JSON.parse(raw) as {
    package: string;
    version: string;
    vmlinuz: string;
    vmlinux?: string;
    modules: Array<{ name: string; file: string }>;
    builtin: string[];
  };
  const vmlinuz = path.join(dir, m.vmlinuz);
  const vmlinux = m.vmlinux !== undefined ? path.join(dir, m.vmlinux) : undefined;
  const modules = m.modules.map((x) => ({ name: x.name, file: path.join(dir, x.file) }));
  if (!existsSync(vmlinuz) || modules.some((x) => !existsSync(x.file))) return undefined;
  if (vmlinux !== undefined && !existsSync(vmlinux)) return undefined;
  return { package: m.package, version: m.version, vmlinuz, ...(vmlinux ? { vmlinux } : {}), modules, builtin: m.builtin };
}

/** Downloads `pkg` with `apt-get download` into `<cache>/debs/` unless it is there. */
async function ensureDeb(cacheDir: string, pkg: string): Promise<string> {
  const debs = path.join(cacheDir, 'debs');
  await mkdir(debs, { recursive: true });
  const have = (await readdir(debs)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (have !== undefined) return path.join(debs, have);
  const dl = path.join(debs, `.dl-${uniqueId('d')}`);
  await mkdir(dl, { recursive: true });
  try {
    try {
      await execFile('apt-get', ['download', pkg], { cwd: dl, maxBuffer: 1 << 24, timeout: 600_000 });
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(`apt-get download ${pkg} failed: ${err.stderr ?? err.message}`);
    }
    const got = (await readdir(dl)).find((f) => f.endsWith('.deb'));
    if (got === undefined) throw new Error(`apt-get download ${pkg} produced no .deb`);
    await rename(path.join(dl, got), path.join(debs, got));
    return path.join(debs, got);
  } finally {
    await rm(dl, { recursive: true, force: true });
  }
}

/** Runs `cmd args` with `input` on stdin and its stdout written to `outFile`. */
function pipeThrough(cmd: string, args: string[], input: Uint8Array, outFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(outFile);
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    child.stdout.pipe(out);
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    child.once('error', reject);
    child.once('close', (code) => {
      out.close(() => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`))));
    });
  });
}

/** Whether an ELF file carries the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18). */
export function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let off = Number(elf.readBigUInt64LE(ph + 8));
    const end = off + Number(elf.readBigUInt64LE(ph + 32));
    while (off + 12 <= end) {
      const namesz = elf.readUInt32LE(off);
      const descsz = elf.readUInt32LE(off + 4);
      const type = elf.readUInt32LE(off + 8);
      const name = elf.subarray(off + 12, off + 12 + namesz).toString('latin1').replace(/\0+$/, '');
      if (name === 'Xen' && type === 18) return true;
      off += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
}

/**
 * Extracts the uncompressed kernel ELF from a bzImage (boot protocol >= 2.08: payload_offset and
 * payload_length in the setup header) and checks it has a PVH entry point. Returns true when
 * `outFile` was written.
 */
export async function extractPvhKernel(bzImage: string, outFile: string): Promise<boolean> {
  const b = await readFile(bzImage);
  if (b.length < 0x250 || b.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new Error('not a bzImage');
  if (b.readUInt16LE(0x206) < 0x208) throw new Error('boot protocol < 2.08: no payload fields');
  const setupSects = b[0x1f1] === 0 ? 4 : (b[0x1f1] as number);
  const payloadStart = (setupSects + 1) * 512 + b.readUInt32LE(0x248);
  const payload = b.subarray(payloadStart, payloadStart + b.readUInt32LE(0x24c));
  const tmp = `${outFile}.tmp`;
  if (payload[0] === 0xfd && payload.toString('latin1', 1, 6) === '7zXZ\0') {
    const xz = which('xz');
    await (xz ? pipeThrough(xz, ['-dc', '--single-stream'], payload, tmp) : pipeThrough('busybox', ['unxz', '-c'], payload, tmp));
  } else if (payload[0] === 0x1f && payload[1] === 0x8b) {
    await writeFile(tmp, gunzipSync(payload));
  } else if (payload.readUInt32LE(0) === 0xfd2fb528) {
    await pipeThrough('zstd', ['-dc'], payload, tmp);
  } else {
    throw new Error(`unsupported kernel compression (magic ${payload.subarray(0, 4).toString('hex')})`);
  }
  const elf = await readFile(tmp);
  if (!hasPvhNote(elf)) {
    await rm(tmp, { force: true });
    throw new Error('the kernel has no PVH entry note (CONFIG_PVH)');
  }
  await rename(tmp, outFile);
  return true;
}

/** One initramfs entry for {@link cpioNewc}. */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash (e.g. `bin/busybox`). */
  name: string;
  /** File type and permissions, e.g. `0o100755`, `0o040755`, `0o020600`. */
  mode: number;
  data?: Uint8Array;
  /** For device nodes. */
  rdevMajor?: number;
  rdevMinor?: number;
}

/** Serialises entries as a cpio "newc" archive (what the kernel unpacks as an initramfs). */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  const header = (e: CpioEntry, size: number, inode: number, nlink: number): void => {
    const name = Buffer.from(`${e.name}\0`);
    const h = Buffer.from(
      '070701' +
        hex(inode) +
        hex(e.mode) +
        hex(0) + // uid
        hex(0) + // gid
        hex(nlink) +
        hex(0) + // mtime: fixed, for reproducible archives
        hex(size) +
        hex(0) +
        hex(0) +
        hex(e.rdevMajor ?? 0) +
        hex(e.rdevMinor ?? 0) +
        hex(name.length) +
        hex(0),
      'ascii',
    );
    parts.push(h, name, pad4(h.length + name.length));
  };
  for (const e of entries) {
    const data = e.data ?? new Uint8Array(0);
    const isDir = (e.mode & 0o170000) === 0o040000;
    header(e, data.length, ino++, isDir ? 2 : 1);
    if (data.length > 0) parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), pad4(data.length));
  }
  header({ name: 'TRAILER!!!', mode: 0 }, 0, 0, 1);
  const out = Buffer.concat(parts);
  // Pad the archive to a 512-byte multiple like cpio(1) does.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}

/** The /init script: mount, load modules, run the caller's script, power off. */
export function initScript(modules: readonly string[]): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run
# Marker lines for the host: @@NAME VALUE...
mark() { echo "@@$*"; }
for m in ${modules.join(' ')}; do
  insmod /lib/modules/$m.ko || mark insmod-failed $m
done
mark boot
( . /guest.sh )
mark exit $?
sync
poweroff -f
`;
}

/**
 * Builds (or finds in the cache) the guest: kernel + a busybox initramfs whose /init loads the
 * virtio modules, runs `script` and powers off. Cached by kernel version, modules and the hash
 * of everything in the initramfs; a second call with the same inputs returns at once.
 */
export async function buildGuest(options: BuildGuestOptions): Promise<GuestImage> {
  const busybox = options.busybox ?? '/bin/busybox';
  const avail = isGuestBuildAvailable(busybox);
  if (!avail.ok) throw new Error(avail.reason);
  const cacheDir = options.cacheDir ?? defaultGuestCacheDir();
  const kernel = await ensureGuestKernel({
    cacheDir,
    ...(options.kernelPackage !== undefined ? { kernelPackage: options.kernelPackage } : {}),
    ...(options.modules !== undefined ? { modules: options.modules } : {}),
  });
  const moduleNames = kernel.modules.map((m) => m.name);
  const init = initScript(moduleNames);
  const busyboxData = await readFile(busybox);
  const extra = Object.entries(options.files ?? {})
    .map(([p, c]) => [p.replace(/^\/+/, ''), typeof c === 'string' ? Buffer.from(c) : Buffer.from(c)] as const)
    .sort(([a], [b]) => a.localeCompare(b));

  const key = createHash('sha256');
  key.update(`format ${INITRAMFS_FORMAT}\nkernel ${kernel.package} ${kernel.version}\nmodules ${moduleNames.join(',')}\n`);
  key.update(init);
  key.update(`\nscript ${sha256(options.script)}\nbusybox ${sha256(busyboxData)}\n`);
  for (const [p, c] of extra) key.update(`file ${p} ${sha256(c)}\n`);
  const initrd = path.join(cacheDir, `initrd-${kernel.version}-${key.digest('hex').slice(0, 16)}.cpio.gz`);

  if (!existsSync(initrd)) {
    const entries: CpioEntry[] = [];
    const dirs = new Set<string>(['bin', 'dev', 'proc', 'sys', 'tmp', 'run', 'lib', 'lib/modules']);
    for (const [p] of extra) {
      for (let d = path.posix.dirname(p); d !== '.' && d !== '/'; d = path.posix.dirname(d)) dirs.add(d);
    }
    for (const d of [...dirs].sort()) entries.push({ name: d, mode: 0o040755 });
    entries.push({ name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 });
    entries.push({ name: 'dev/null', mode: 0o020666, rdevMajor: 1, rdevMinor: 3 });
    entries.push({ name: 'bin/busybox', mode: 0o100755, data: busyboxData });
    entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(init) });
    entries.push({ name: 'guest.sh', mode: 0o100644, data: Buffer.from(options.script) });
    for (const m of kernel.modules) {
      entries.push({ name: `lib/modules/${m.name}.ko`, mode: 0o100644, data: await readFile(m.file) });
    }
    for (const [p, c] of extra) entries.push({ name: p, mode: 0o100644, data: c });
    const tmp = `${initrd}.${uniqueId('t')}.tmp`;
    await writeFile(tmp, gzipSync(cpioNewc(entries), { level: 6 }));
    await rename(tmp, initrd);
  }
  const kernelFile = options.pvh !== false && kernel.vmlinux !== undefined ? kernel.vmlinux : kernel.vmlinuz;
  return { kernel: kernelFile, bzImage: kernel.vmlinuz, initrd, kernelVersion: kernel.version, modules: moduleNames };
}

/** A marker line printed by the guest (`mark NAME VALUE...` → `@@NAME VALUE...`). */
export interface Marker {
  name: string;
  value: string;
}

/** Extracts marker lines (`@@NAME VALUE...`) from serial output, in order. */
export function parseMarkers(serial: string): Marker[] {
  const out: Marker[] = [];
  for (const raw of serial.split('\n')) {
    const line = raw.replace(/\r/g, '');
    const m = line.match(/@@([A-Za-z0-9_.:-]+)(?:[ \t]+(.*?))?\s*$/);
    if (m?.[1] !== undefined) out.push({ name: m[1], value: m[2] ?? '' });
  }
  return out;
}
