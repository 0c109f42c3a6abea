import { parseMarkers, type GuestImage, type Marker } from './guest.js';
import { ManagedProcess, escapeRegExp, type ExitStatus } from './process.js';
import { makeTempDir, requireBinaries, TimeoutError, waitForPath, type Availability } from './util.js';

export interface QemuNetDevice {
  /** vhost-user socket of the back-end. */
  socketPath: string;
  /** Queue pairs (`-netdev ...,queues=N` and `mq=on` when N > 1). Default 1. */
  queues?: number;
  /** Default `52:54:00:12:34:5X` with X the device index. */
  mac?: string;
  /** QEMU is the client and redials a lost back-end every N seconds (`reconnect=N`; true = 1). */
  reconnect?: number | boolean;
  /** QEMU listens on the socket (`server=on,wait=on`): QEMU waits for the back-end to dial in. */
  server?: boolean;
  /** Extra `-device virtio-net-pci` properties, e.g. `rx_queue_size=1024`. */
  deviceExtra?: string[];
}

export interface QemuBlkDevice {
  socketPath: string;
  /** `num-queues` (the back-end must offer at least as many). Default 1. */
  numQueues?: number;
  reconnect?: number | boolean;
  server?: boolean;
  /** Extra `-device vhost-user-blk-pci` properties, e.g. `queue-size=256`. */
  deviceExtra?: string[];
}

export interface QemuOptions {
  /** Kernel and initrd (from {@link buildGuest}). */
  image: Pick<GuestImage, 'kernel' | 'initrd'>;
  /** Guest RAM in MiB (default 256); it is a shared memfd, as vhost-user requires. */
  memoryMiB?: number;
  /** Appended to `console=ttyS0 quiet panic=-1`. */
  append?: string;
  net?: QemuNetDevice[];
  blk?: QemuBlkDevice[];
  /** vCPUs (default 1). */
  smp?: number;
  /** Extra QEMU arguments. */
  extraArgs?: string[];
  /** Executable (default `qemu-system-x86_64`). */
  binary?: string;
  name?: string;
  onOutput?: (text: string) => void;
}

/** `{ ok: true }` when `qemu-system-x86_64` (Debian `qemu-system-x86`) is installed. */
export function isQemuAvailable(binary = 'qemu-system-x86_64'): Availability {
  return requireBinaries([{ bin: binary, pkg: 'qemu-system-x86' }]);
}

function chardev(id: string, dev: { socketPath: string; reconnect?: number | boolean; server?: boolean }): string {
  let s = `socket,id=${id},path=${dev.socketPath}`;
  if (dev.server === true) {
    if (dev.reconnect !== undefined && dev.reconnect !== false) throw new Error('reconnect applies to client sockets only');
    s += ',server=on,wait=on';
  } else if (dev.reconnect !== undefined && dev.reconnect !== false) {
    s += `,reconnect=${dev.reconnect === true ? 1 : dev.reconnect}`;
  }
  return s;
}

/** The QEMU argument vector (without the binary) for the options. */
export function qemuArgs(opts: QemuOptions): string[] {
  const mem = opts.memoryMiB ?? 256;
  const append = ['console=ttyS0', 'quiet', 'panic=-1', ...(opts.append ? [opts.append] : [])].join(' ');
  const args = [
    '-machine', 'q35,accel=tcg',
    '-cpu', 'max',
    '-smp', String(opts.smp ?? 1),
    '-m', `${mem}M`,
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
    '-kernel', opts.image.kernel,
    '-initrd', opts.image.initrd,
    '-append', append,
    '-display', 'none',
    '-nodefaults',
    '-serial', 'stdio',
    '-no-reboot',
  ];
  (opts.net ?? []).forEach((n, i) => {
    const q = n.queues ?? 1;
    const mac = n.mac ?? `52:54:00:12:34:${(0x56 + i).toString(16).padStart(2, '0')}`;
    args.push('-chardev', chardev(`c${i}`, n));
    args.push('-netdev', `vhost-user,id=n${i},chardev=c${i}${q > 1 ? `,queues=${q}` : ''}`);
    // vectors=0: QEMU 7.2 under TCG segfaults when a vhost-user-net device starts with MSI-X.
    const dev = [`virtio-net-pci`, `netdev=n${i}`, `mac=${mac}`, ...(q > 1 ? ['mq=on'] : []), 'vectors=0', ...(n.deviceExtra ?? [])];
    args.push('-device', dev.join(','));
  });
  (opts.blk ?? []).forEach((b, i) => {
    args.push('-chardev', chardev(`b${i}`, b));
    const dev = ['vhost-user-blk-pci', `chardev=b${i}`, `num-queues=${b.numQueues ?? 1}`, ...(b.deviceExtra ?? [])];
    args.push('-device', dev.join(','));
  });
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** The result of a guest run. */
export interface GuestRun {
  exit: ExitStatus;
  /** Everything the guest printed on its serial console (and QEMU on stderr). */
  serial: string;
  markers: Marker[];
  /** Milliseconds from start to exit. */
  durationMs: number;
}

/** A running QEMU guest. */
export class QemuGuest implements AsyncDisposable {
  readonly proc: ManagedProcess;
  readonly startedAt = Date.now();

  private constructor(proc: ManagedProcess) {
    this.proc = proc;
  }

  /** Starts QEMU (it boots on its own; the guest powers off when its script is done). */
  static async start(options: QemuOptions): Promise<QemuGuest> {
    const binary = options.binary ?? 'qemu-system-x86_64';
    const avail = isQemuAvailable(binary);
    if (!avail.ok) throw new Error(avail.reason);
    const args = qemuArgs(options); // validates the options
    const cwd = await makeTempDir('qemu');
    const proc = new ManagedProcess(binary, args, {
      name: options.name ?? 'qemu',
      cwd,
      // A pipe that is never written: the serial console reads stdin, and must not see EOF/tty.
      stdin: true,
      cleanupDirs: [cwd],
      ...(options.onOutput ? { onOutput: options.onOutput } : {}),
    });
    const guest = new QemuGuest(proc);
    // QEMU as server: the socket appears once it listens.
    const servers = [...(options.net ?? []), ...(options.blk ?? [])].filter((d) => d.server === true);
    try {
      for (const d of servers) {
        await waitForPath(d.socketPath, {
          timeoutMs: 10_000,
          abortIf: () => (proc.running ? undefined : `qemu exited\n${proc.describe()}`),
        });
      }
    } catch (e) {
      await guest.close();
      throw e;
    }
    return guest;
  }

  get serial(): string {
    return this.proc.output.text();
  }

  get markers(): Marker[] {
    return parseMarkers(this.serial);
  }

  get running(): boolean {
    return this.proc.running;
  }

  /** Waits for a marker line `@@NAME ...` and returns its value. */
  async waitForMarker(name: string, timeoutMs = 60_000): Promise<string> {
    const m = await this.proc.waitForOutput(new RegExp(`@@${escapeRegExp(name)}(?:[ \\t]+([^\\r\\n]*))?\\r?\\n`), {
      timeoutMs,
    });
    return (m[1] ?? '').trim();
  }

  /**
   * Waits for the guest to power off; on timeout kills QEMU and throws with the serial output.
   */
  async waitForExit(timeoutMs = 60_000): Promise<GuestRun> {
    try {
      const exit = await this.proc.waitForExit(timeoutMs);
      return { exit, serial: this.serial, markers: this.markers, durationMs: Date.now() - this.startedAt };
    } catch (e) {
      await this.close();
      if (e instanceof TimeoutError) {
        throw new TimeoutError(`guest did not power off within ${timeoutMs} ms\n${this.proc.describe(6000)}`);
      }
      throw e;
    }
  }

  /** Kills QEMU (SIGTERM, then SIGKILL to its process group) and removes its temp dir. */
  async close(): Promise<ExitStatus> {
    return this.proc.close({ termMs: 3000 });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Boots the guest and waits for it to power off (bounded by `timeoutMs`, default 60 s); QEMU
 * is always gone when this returns or throws.
 */
export async function runGuest(options: QemuOptions & { timeoutMs?: number }): Promise<GuestRun> {
  const guest = await QemuGuest.start(options);
  try {
    return await guest.waitForExit(options.timeoutMs ?? 60_000);
  } finally {
    await guest.close();
  }
}

/** First value of marker `name`, or undefined. */
export function markerValue(markers: readonly Marker[], name: string): string | undefined {
  return markers.find((m) => m.name === name)?.value;
}
