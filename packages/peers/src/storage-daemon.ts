import { open } from 'node:fs/promises';
import { ManagedProcess, type ExitStatus } from './process.js';
import { makeTempDir, removeDir, removeStaleSocket, requireBinaries, socketPath as checkedSocketPath, waitForPath, type Availability } from './util.js';

export interface StorageDaemonOptions {
  /** Backing image file (raw unless `format` says otherwise). */
  imagePath: string;
  /** vhost-user socket to listen on. Default: `blk.sock` in the daemon's own temp dir under /tmp. */
  socketPath?: string;
  /**
   * Request queues the export offers (`num-queues`, default 1). QEMU refuses to start a
   * `vhost-user-blk-pci` with more `num-queues` than this.
   */
  numQueues?: number;
  /** `writable=on` (default true). */
  writable?: boolean;
  /** Image format driver on top of the file (`raw` by default: the file is used as is). */
  format?: 'raw' | 'qcow2';
  /** `logical-block-size` of the export (default QEMU's, 512). */
  logicalBlockSize?: number;
  /** Open the file with O_DIRECT (`cache.direct=on`). */
  direct?: boolean;
  readyTimeoutMs?: number;
  binary?: string;
  name?: string;
  onOutput?: (text: string) => void;
}

/** `{ ok: true }` when `qemu-storage-daemon` (Debian `qemu-system-common`) is installed. */
export function isStorageDaemonAvailable(binary = 'qemu-storage-daemon'): Availability {
  return requireBinaries([{ bin: binary, pkg: 'qemu-system-common' }]);
}

/** The argument vector (without the binary). */
export function storageDaemonArgs(opts: StorageDaemonOptions & { socketPath: string }): string[] {
  const file = `driver=file,node-name=file0,filename=${opts.imagePath}${opts.direct === true ? ',cache.direct=on' : ''}`;
  const args = ['--blockdev', file];
  let node = 'file0';
  if (opts.format === 'qcow2') {
    args.push('--blockdev', 'driver=qcow2,node-name=fmt0,file=file0');
    node = 'fmt0';
  }
  const exp = [
    'type=vhost-user-blk',
    'id=export0',
    `node-name=${node}`,
    'addr.type=unix',
    `addr.path=${opts.socketPath}`,
    `writable=${opts.writable === false ? 'off' : 'on'}`,
    `num-queues=${opts.numQueues ?? 1}`,
  ];
  if (opts.logicalBlockSize !== undefined) exp.push(`logical-block-size=${opts.logicalBlockSize}`);
  args.push('--export', exp.join(','));
  return args;
}

/** qemu-storage-daemon exporting an image as a vhost-user-blk back-end. */
export class StorageDaemon implements AsyncDisposable {
  readonly proc: ManagedProcess;
  readonly socketPath: string;

  private constructor(proc: ManagedProcess, socketPath: string) {
    this.proc = proc;
    this.socketPath = socketPath;
  }

  /** Starts the daemon and waits for its socket. */
  static async start(options: StorageDaemonOptions): Promise<StorageDaemon> {
    const binary = options.binary ?? 'qemu-storage-daemon';
    const avail = isStorageDaemonAvailable(binary);
    if (!avail.ok) throw new Error(avail.reason);
    const dir = await makeTempDir('qsd');
    const sock = options.socketPath ?? checkedSocketPath(dir, 'blk.sock');
    let proc: ManagedProcess;
    try {
      await removeStaleSocket(sock);
      proc = new ManagedProcess(binary, storageDaemonArgs({ ...options, socketPath: sock }), {
        name: options.name ?? 'qemu-storage-daemon',
        cleanupDirs: [dir],
        ...(options.onOutput ? { onOutput: options.onOutput } : {}),
      });
    } catch (e) {
      await removeDir(dir);
      throw e;
    }
    const d = new StorageDaemon(proc, sock);
    try {
      await waitForPath(sock, {
        timeoutMs: options.readyTimeoutMs ?? 10_000,
        abortIf: () => (proc.running ? undefined : `qemu-storage-daemon exited\n${proc.describe()}`),
      });
    } catch (e) {
      await d.close();
      throw e;
    }
    return d;
  }

  get output(): string {
    return this.proc.output.text();
  }

  get running(): boolean {
    return this.proc.running;
  }

  /** SIGKILL, e.g. to test a back-end crash. */
  async kill(): Promise<ExitStatus> {
    this.proc.signal('SIGKILL');
    return this.proc.exited;
  }

  /** SIGTERM (it exits cleanly), SIGKILL if needed; removes its temp dir. */
  async close(): Promise<ExitStatus> {
    return this.proc.close({ termMs: 3000 });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts qemu-storage-daemon; same as `StorageDaemon.start`. */
export function startStorageDaemon(options: StorageDaemonOptions): Promise<StorageDaemon> {
  return StorageDaemon.start(options);
}

/** Creates (or truncates) a sparse raw image of `sizeBytes`. */
export async function createRawImage(file: string, sizeBytes: number): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.truncate(sizeBytes);
  } finally {
    await fh.close();
  }
}
