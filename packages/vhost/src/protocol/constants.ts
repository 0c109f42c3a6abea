/**
 * vhost-user protocol constants: request codes, header flags, protocol and
 * transport feature bits, limits.
 *
 * Source: QEMU `docs/interop/vhost-user.rst` ("Message Specification",
 * "Protocol features", "Front-end message types", "Back-end message types").
 * Names follow the spec with the `VHOST_USER_` prefix dropped and the
 * current front-end / back-end vocabulary (`BACKEND_REQ`, not `SLAVE_REQ`).
 *
 * @packageDocumentation
 */

/** Requests the front-end sends to the back-end on the main socket. */
export enum FrontendRequest {
  NONE = 0,
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  /** Deprecated: "back-ends either ignore this message, or use it to disable all rings". */
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
  GET_SHARED_OBJECT = 41,
  SET_DEVICE_STATE_FD = 42,
  CHECK_DEVICE_STATE = 43,
}

/** Requests the back-end sends to the front-end on the SET_BACKEND_REQ_FD socket. */
export enum BackendRequest {
  NONE = 0,
  IOTLB_MSG = 1,
  CONFIG_CHANGE_MSG = 2,
  VRING_HOST_NOTIFIER_MSG = 3,
  VRING_CALL = 4,
  VRING_ERR = 5,
  SHARED_OBJECT_ADD = 6,
  SHARED_OBJECT_REMOVE = 7,
  SHARED_OBJECT_LOOKUP = 8,
}

/** Name of a front-end request code for log lines (`UNKNOWN(99)` when not in the spec). */
export function frontendRequestName(code: number): string {
  const name = (FrontendRequest as unknown as Record<number, string | undefined>)[code];
  return name !== undefined && code !== FrontendRequest.NONE ? name : `UNKNOWN(${code})`;
}

/** Name of a back-end request code for log lines. */
export function backendRequestName(code: number): string {
  const name = (BackendRequest as unknown as Record<number, string | undefined>)[code];
  return name !== undefined && code !== BackendRequest.NONE ? name : `UNKNOWN(${code})`;
}

// ---- header ---------------------------------------------------------------

/** Size of the message header: request u32, flags u32, size u32. */
export const HEADER_SIZE = 12;
/** Byte offsets of the header fields. */
export const HEADER_REQUEST_OFFSET = 0;
export const HEADER_FLAGS_OFFSET = 4;
export const HEADER_SIZE_OFFSET = 8;

/** "Lower 2 bits are the version (currently 0x01)". */
export const FLAG_VERSION_MASK = 0x3;
export const PROTOCOL_VERSION = 0x1;
/** "Bit 2 is the reply flag - needs to be sent on each reply from the back-end". */
export const FLAG_REPLY = 0x4;
/** "Bit 3 is the need_reply flag" (REPLY_ACK). */
export const FLAG_NEED_REPLY = 0x8;
/** Every flag bit the spec defines; any other bit set is a malformed message. */
export const FLAG_KNOWN_MASK = FLAG_VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY;

// ---- limits -----------------------------------------------------------------

/** At most this many fds travel with one message (SCM_RIGHTS), and SET_MEM_TABLE carries at most this many regions. */
export const MAX_FDS_PER_MESSAGE = 8;
/** "region0 | ... | region7": the memory table holds at most 8 regions. */
export const MAX_MEM_TABLE_REGIONS = 8;
/** VHOST_USER_MAX_CONFIG_SIZE: a config space access moves at most 256 bytes. */
export const MAX_CONFIG_SIZE = 256;
/** Size of the vhost-user config payload header (offset, size, flags). */
export const CONFIG_HEADER_SIZE = 12;
/**
 * The largest payload any request can legally carry: the config message
 * (12-byte header + 256 bytes of config space). The memory table with 8 regions
 * is 8 + 8 * 32 = 264 bytes. A header announcing more than this is refused
 * before a single payload byte is read.
 */
export const MAX_PAYLOAD_SIZE = CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE;

/** "#define VHOST_LOG_PAGE 0x1000": one dirty-log bit covers 4 KiB of guest memory. */
export const VHOST_LOG_PAGE = 0x1000;

/** Largest ring size the back-end accepts (virtio: Queue Size max 32768). */
export const MAX_VRING_SIZE = 32768;

// ---- vring fd messages (SET_VRING_KICK / CALL / ERR) --------------------------

/** "Bits (0-7) of the payload contain the vring index." */
export const VRING_IDX_MASK = 0xff;
/** "Bit 8 is the invalid FD flag ... polling should be used instead". */
export const VRING_NOFD_MASK = 0x100;

/** SET_VRING_ADDR flags: VHOST_VRING_F_LOG (bit 0): log used-ring writes at log_guest_addr. */
export const VRING_F_LOG = 0x1;

// ---- virtio transport / vhost feature bits ----------------------------------

/** "#define VHOST_USER_F_PROTOCOL_FEATURES 30" (reuses the unused virtio bit 30). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** VHOST_F_LOG_ALL: the front-end toggles dirty logging with SET_FEATURES. */
export const VHOST_F_LOG_ALL = 26;

/** Protocol feature bits (VHOST_USER_PROTOCOL_F_*). Bits >= 20 are not stable. */
export enum ProtocolFeature {
  MQ = 0,
  LOG_SHMFD = 1,
  RARP = 2,
  REPLY_ACK = 3,
  NET_MTU = 4,
  BACKEND_REQ = 5,
  CROSS_ENDIAN = 6,
  CRYPTO_SESSION = 7,
  PAGEFAULT = 8,
  CONFIG = 9,
  BACKEND_SEND_FD = 10,
  HOST_NOTIFIER = 11,
  INFLIGHT_SHMFD = 12,
  RESET_DEVICE = 13,
  INBAND_NOTIFICATIONS = 14,
  CONFIGURE_MEM_SLOTS = 15,
  STATUS = 16,
  XEN_MMAP = 17,
  SHARED_OBJECT = 18,
  DEVICE_STATE = 19,
}

/** The 64-bit mask of one feature bit. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** The 64-bit mask of several feature bits. */
export function bits(...ns: readonly number[]): bigint {
  let mask = 0n;
  for (const n of ns) mask |= bit(n);
  return mask;
}

/** True when bit `n` is set in `mask`. */
export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

/** Names of the protocol feature bits set in `mask` (for logs). */
export function protocolFeatureNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let n = 0; n < 64; n++) {
    if (!hasBit(mask, n)) continue;
    const name = (ProtocolFeature as unknown as Record<number, string | undefined>)[n];
    out.push(name ?? `BIT${n}`);
  }
  return out;
}

/** Virtio device status bits (SET_STATUS / GET_STATUS payload). */
export enum DeviceStatus {
  ACKNOWLEDGE = 1,
  DRIVER = 2,
  DRIVER_OK = 4,
  FEATURES_OK = 8,
  NEEDS_RESET = 64,
  FAILED = 128,
}

/** SET_CONFIG / GET_CONFIG flags: 0 writable fields, 1 live migration. */
export enum ConfigFlags {
  WRITABLE = 0,
  MIGRATION = 1,
}

/** IOTLB message types. */
export enum IotlbType {
  MISS = 1,
  UPDATE = 2,
  INVALIDATE = 3,
  ACCESS_FAIL = 4,
}
