/**
 * The contract of the native addon (`build/Release/vhost_native.node`).
 *
 * Mechanism only, no policy: every function is a thin wrapper over one or two
 * syscalls. Failures throw an `Error` shaped like Node's system errors:
 * `{ code: 'EBADF', errno: 9, syscall: 'mmap', message: 'mmap: EBADF (Bad file descriptor)' }`.
 * Would-block conditions on non-blocking fds are *not* errors: they return the
 * documented sentinel (-1, 0 or false) so hot paths do not pay for exceptions.
 * Bad JavaScript arguments throw `TypeError` (code `ERR_INVALID_ARG_TYPE`) or
 * `RangeError` (code `ERR_OUT_OF_RANGE`) before any syscall is made.
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
export const POLL_PRIORITIZED = 8;

/**
 * Watches one fd on the libuv loop of the thread that created it
 * (`node::GetCurrentEventLoop`, so it works in workers too).
 * The callback receives the events (POLL_*) and, when `drainEventfd` was set,
 * the eventfd counter value that was read (0 if nothing was pending) — the
 * eventfd is read before the callback so a level-triggered poll does not spin.
 * A negative `events` value in the callback is a libuv error status (-errno),
 * also used when draining the eventfd fails.
 * The callback runs like any Node callback: nextTicks and microtasks it queues
 * run before the loop goes on; an exception it throws is an uncaught exception.
 * While started (and not `unref()`ed) the poller keeps the loop alive, and the
 * JS object is held until `close()`. A poller still open when its thread's
 * environment is torn down (worker exit or terminate, process exit) is closed
 * then, and teardown waits for libuv to release the handle.
 * Creating a poller sets O_NONBLOCK on the fd (libuv does); only one poller per
 * fd per thread (EEXIST otherwise). Close the poller before closing its fd.
 */
export interface Poller {
  /** (Re)start watching for `events`. */
  start(events: number): void;
  /** Stop watching (can be started again). */
  stop(): void;
  /** Stop and release the handle; idempotent. The fd itself is NOT closed. */
  close(): void;
  /** Let the poller keep the loop alive while started (the default). */
  ref(): void;
  /** Do not keep the loop alive for this poller (it still fires while the loop runs). */
  unref(): void;
  readonly closed: boolean;
  /** The watched fd (-1 once torn down). */
  readonly fd: number;
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
  /**
   * Number of released mappings whose zero overlay is still waiting for the GC
   * to drop the last SharedArrayBuffer (address space only, no guest pages).
   */
  releasedMappings(): number;
  /** The system page size (mmap offsets must be multiples of it). */
  readonly pageSize: number;
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
  /** Read the counter; returns 0 when it is 0 (EAGAIN). Values above 2^53 - 1 are clamped to Number.MAX_SAFE_INTEGER. */
  eventfdRead(fd: number): number;
  /** Add `value` (default 1) to the counter. Returns false on EAGAIN (counter full). */
  eventfdWrite(fd: number, value?: number): boolean;
  /** Set or clear O_NONBLOCK. */
  setNonBlocking(fd: number, on: boolean): void;
  /**
   * poll(2) for POLLIN on `fds[0 .. count)` (count <= 64), blocking the calling thread up to
   * `timeoutMs` (-1: no limit). The revents of fd i are written to `fds[count + i]`, so the array
   * must hold 2 * count entries. Returns how many fds have revents (0 on timeout or EINTR).
   * Negative fds are ignored; a closed fd reports POLLNVAL (0x20). For a worker thread that waits
   * for its own eventfds instead of being woken through the main thread.
   */
  pollReadable(fds: Int32Array, count: number, timeoutMs: number): number;

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
   * A short count is possible on a full socket: the fds travel with the first
   * byte that was sent. With fds, `length` must be > 0.
   */
  sendmsg(fd: number, data: Uint8Array, offset: number, length: number, fds?: readonly number[]): number;
  /**
   * recvmsg of at most `length` bytes into `buf[offset..]` with MSG_CMSG_CLOEXEC
   * (non-blocking). MSG_CTRUNC throws an error with code 'ECTRUNC' after closing
   * every fd that did arrive (the error's errno is EMSGSIZE and its `bytes`
   * property says how many bytes were consumed: the stream is out of step, so
   * treat it as fatal for the connection). `length` must be > 0.
   */
  recvmsg(fd: number, buf: Uint8Array, offset: number, length: number): RecvResult;
  /**
   * {@link recvmsg} with a control buffer sized for only `maxFds` (0..8) fds, so
   * the MSG_CTRUNC path can be exercised. For tests; use recvmsg otherwise.
   */
  recvmsgCapped(fd: number, buf: Uint8Array, offset: number, length: number, maxFds: number): RecvResult;
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

  /** Values of the C headers this addon was built against (see constants.ts). */
  readonly constants: Readonly<Record<string, number>>;
}
