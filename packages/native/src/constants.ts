/**
 * Linux constants the native layer's users need, as plain numbers (they are
 * fixed by the kernel ABI). A test checks them against the values the addon was
 * compiled with (`native.constants`).
 */

/** fcntl(F_ADD_SEALS) bits (linux/fcntl.h). */
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;
export const F_SEAL_FUTURE_WRITE = 0x0010;

/** memfd_create flags (linux/memfd.h); memfdCreate always uses both. */
export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;

/** Most fds one sendmsg/recvmsg carries (the vhost-user limit). */
export const MAX_FDS = 8;

/** poll(2) revents bits (asm-generic/poll.h), as {@link NativeBinding.pollReadable} reports them. */
export const POLLIN = 0x001;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
