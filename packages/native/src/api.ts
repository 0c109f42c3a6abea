/**
 * The contract of the native addon (`build/Release/vhost_native.node`).
 *
 * Mechanism only, no policy: every function is a thin wrapper over one or two
 * syscalls. Failures throw an `Error` shaped like Node's system errors:
 * `{ code: 'EBADF', errno: 9, syscall: 'mmap', message: 'mmap: EBADF (Bad file descriptor)' }`.
 * Would-block conditions on non-blocking fds are *not* errors: they return the
 * documented sentinel (-1 or 0n) so hot paths do not pay for exceptions.
 */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** Result of {@link NativeBinding.recvmsg}. */
export interface RecvResult {
  /** Bytes read into the buffer; 0 means the peer closed; -1 means EAGAIN (nothing to read). */
  bytes: number;
  /** File descriptors that arrived with exactly these bytes (SCM_RIGHTS, already O_CLOEXEC). */
  fds: number[];
}

/** Poll event bits, as libuv's `uv_poll_event`. */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
export const POLL_DISCONNECT = 4;

/**
 * Watches one fd on the libuv loop of the thread that created it
 * (`node::GetCurrentEventLoop`, so it works in workers too).
 * The callback receives the events (POLL_*) and, when `drainEventfd` was set,
 * the eventfd counter value that was read (0 if nothing was pending) — the
 * eventfd is read before the callback so a level-triggered poll does not spin.
 * A negative `events` value in the callback is a libuv error status.
 * The poller keeps the loop alive until `close()`; it is closed automatically
 * when its thread's environment is torn down (worker exit).
 */
export interface Poller {
  /** (Re)start watching for `events`. */
  start(events: number): void;
  /** Stop watching (can be started again). */
  stop(): void;
  /** Stop and release the handle; idempotent. The fd itself is NOT closed. */
  close(): void;
  readonly closed: boolean;
}
export interface PollerConstructor {
  new (fd: number, callback: (events: number, eventfdValue: number) => void, drainEventfd?: boolean): Poller;
}

export interface NativeBinding {
  // ---- memory -------------------------------------------------------------
  /**
   * mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset) as a real
   * SharedArrayBuffer (V8 backing store whose deleter munmaps). `offset` must be
   * page aligned; `length` > 0. The fd may be closed afterwards.
   */
  mmap(fd: number, offset: number, length: number): SharedArrayBuffer;
  /**
   * Free the pages behind a SAB from {@link mmap} now: the range is replaced by
   * an anonymous PROT_NONE-free zero mapping (MAP_FIXED) so stale views read
   * zeros instead of crashing; the deleter unmaps that later. Idempotent.
   * Throws EINVAL for a SAB that did not come from mmap.
   */
  release(sab: SharedArrayBuffer): void;
  /** Number of live mappings made by {@link mmap} (not yet unmapped by GC or released). */
  liveMappings(): number;
  /** st_size of the fd (fstat). */
  fstatSize(fd: number): number;
  /** fcntl(F_GET_SEALS); throws EINVAL for files that do not support seals. */
  getSeals(fd: number): number;
  /** fcntl(F_ADD_SEALS). */
  addSeals(fd: number, seals: number): void;
  /** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING). */
  memfdCreate(name: string): number;
  ftruncate(fd: number, length: number): void;

  // ---- fds ----------------------------------------------------------------
  close(fd: number): void;
  /** dup with O_CLOEXEC (fcntl F_DUPFD_CLOEXEC). */
  dup(fd: number): number;
  /** eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK). */
  eventfdCreate(initval?: number): number;
  /** Read the counter; returns 0 when it is 0 (EAGAIN). Values above 2^53 are clamped. */
  eventfdRead(fd: number): number;
  /** Add `value` (default 1) to the counter. Returns false on EAGAIN (counter full). */
  eventfdWrite(fd: number, value?: number): boolean;
  /** Set or clear O_NONBLOCK. */
  setNonBlocking(fd: number, on: boolean): void;

  // ---- unix stream sockets ------------------------------------------------
  /** socket+bind+listen, non-blocking, cloexec. Fails with EADDRINUSE if the path exists. */
  unixListen(path: string, backlog?: number): number;
  /** accept4 non-blocking+cloexec; -1 on EAGAIN. */
  unixAccept(listenFd: number): number;
  /** socket+connect (blocking connect, then the fd is made non-blocking). Throws ENOENT/ECONNREFUSED. */
  unixConnect(path: string): number;
  /** socketpair(AF_UNIX, SOCK_STREAM), both ends non-blocking + cloexec. */
  socketpair(): [number, number];
  /**
   * sendmsg with the bytes `data[offset, offset+length)` and up to 8 fds
   * (SCM_RIGHTS). Returns bytes sent, or -1 on EAGAIN. MSG_NOSIGNAL is set.
   */
  sendmsg(fd: number, data: Uint8Array, offset: number, length: number, fds?: readonly number[]): number;
  /**
   * recvmsg of at most `length` bytes into `buf[offset..]` with MSG_CMSG_CLOEXEC
   * (non-blocking). MSG_CTRUNC throws an error with code 'ECTRUNC' after closing
   * every fd that did arrive.
   */
  recvmsg(fd: number, buf: Uint8Array, offset: number, length: number): RecvResult;
  /** shutdown(fd, SHUT_RDWR). */
  shutdown(fd: number): void;

  // ---- loop ---------------------------------------------------------------
  Poller: PollerConstructor;

  // ---- threads ------------------------------------------------------------
  /** sched_setaffinity for the calling thread. */
  setAffinity(cpus: readonly number[]): void;
  /** sched_getaffinity of the calling thread. */
  getAffinity(): number[];
  /** gettid() of the calling thread. */
  gettid(): number;
}
