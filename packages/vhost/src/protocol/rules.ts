/**
 * Per-request rules of the front-end -> back-end channel: payload shape and
 * size, number of fds, whether the back-end answers with a reply body.
 * One table, so the framing and the state machine check every message the
 * same way.
 */
import {
  CONFIG_HEADER_SIZE,
  FrontendRequest,
  MAX_CONFIG_SIZE,
  MAX_FDS_PER_MESSAGE,
  MAX_MEM_TABLE_REGIONS,
  ProtocolFeature,
  frontendRequestName,
  hasBit,
} from './constants.js';
import { ProtocolError } from './errors.js';
import type { MessageHeader } from './header.js';
import {
  INFLIGHT_PACKED_SIZE,
  INFLIGHT_SIZE,
  IOTLB_SIZE,
  LOG_SIZE,
  SINGLE_REGION_SIZE,
  U64_SIZE,
  VRING_ADDR_SIZE,
  VRING_STATE_SIZE,
  memoryTableSize,
} from './payloads.js';

/** The shape of a request's payload. */
export type PayloadKind =
  | 'none'
  | 'u64'
  | 'vring-state'
  | 'vring-addr'
  | 'vring-fd'
  | 'memory-table'
  | 'single-region'
  | 'log'
  | 'config'
  | 'inflight'
  | 'iotlb'
  | 'opaque';

/** When the back-end sends a reply body (independent of REPLY_ACK). */
export type ReplyKind =
  /** Never: only a REPLY_ACK ack when NEED_REPLY is set. */
  | 'none'
  /** Always (GET_* requests). */
  | 'always'
  /** Only when the protocol feature {@link RequestRule.replyFeature} is negotiated. */
  | 'with-feature';

export interface RequestRule {
  payload: PayloadKind;
  /** Sizes the payload may have; `sizes` lists exact legal sizes, or `[min, max]` with `range`. */
  sizes: readonly number[];
  /** When true, `sizes` is `[min, max]` and the payload decoder checks the exact size. */
  range?: boolean;
  minFds: number;
  maxFds: number;
  reply: ReplyKind;
  replyFeature?: ProtocolFeature;
}

const none: RequestRule = { payload: 'none', sizes: [0], minFds: 0, maxFds: 0, reply: 'none' };
const u64: RequestRule = { payload: 'u64', sizes: [U64_SIZE], minFds: 0, maxFds: 0, reply: 'none' };
const getU64: RequestRule = { payload: 'none', sizes: [0], minFds: 0, maxFds: 0, reply: 'always' };
const state: RequestRule = { payload: 'vring-state', sizes: [VRING_STATE_SIZE], minFds: 0, maxFds: 0, reply: 'none' };
const vringFd: RequestRule = { payload: 'vring-fd', sizes: [U64_SIZE], minFds: 0, maxFds: 1, reply: 'none' };
const config: RequestRule = {
  payload: 'config',
  sizes: [CONFIG_HEADER_SIZE, CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE],
  range: true,
  minFds: 0,
  maxFds: 0,
  reply: 'none',
};
const inflight: RequestRule = { payload: 'inflight', sizes: [INFLIGHT_SIZE, INFLIGHT_PACKED_SIZE], minFds: 0, maxFds: 0, reply: 'none' };

/**
 * The rules of every front-end request the spec defines. Requests the
 * back-end does not implement are listed too (their sizes are known), so a
 * refusal can still read and discard them cleanly.
 */
export const FRONTEND_REQUEST_RULES: ReadonlyMap<FrontendRequest, RequestRule> = new Map<FrontendRequest, RequestRule>([
  [FrontendRequest.GET_FEATURES, getU64],
  [FrontendRequest.SET_FEATURES, u64],
  [FrontendRequest.SET_OWNER, none],
  [FrontendRequest.RESET_OWNER, none],
  // "The size and ordering of the fds matches the number and ordering of memory regions."
  [
    FrontendRequest.SET_MEM_TABLE,
    { payload: 'memory-table', sizes: [memoryTableSize(0), memoryTableSize(MAX_MEM_TABLE_REGIONS)], range: true, minFds: 0, maxFds: MAX_MEM_TABLE_REGIONS, reply: 'none' },
  ],
  // "the log memory fd is provided in the ancillary data" (LOG_SHMFD); the reply is a u64 with LOG_SHMFD.
  [FrontendRequest.SET_LOG_BASE, { payload: 'log', sizes: [LOG_SIZE], minFds: 1, maxFds: 1, reply: 'with-feature', replyFeature: ProtocolFeature.LOG_SHMFD }],
  [FrontendRequest.SET_LOG_FD, { ...none, minFds: 1, maxFds: 1 }],
  [FrontendRequest.SET_VRING_NUM, state],
  [FrontendRequest.SET_VRING_ADDR, { payload: 'vring-addr', sizes: [VRING_ADDR_SIZE], minFds: 0, maxFds: 0, reply: 'none' }],
  [FrontendRequest.SET_VRING_BASE, state],
  [FrontendRequest.GET_VRING_BASE, { ...state, reply: 'always' }],
  [FrontendRequest.SET_VRING_KICK, vringFd],
  [FrontendRequest.SET_VRING_CALL, vringFd],
  [FrontendRequest.SET_VRING_ERR, vringFd],
  [FrontendRequest.GET_PROTOCOL_FEATURES, getU64],
  [FrontendRequest.SET_PROTOCOL_FEATURES, u64],
  [FrontendRequest.GET_QUEUE_NUM, getU64],
  [FrontendRequest.SET_VRING_ENABLE, state],
  [FrontendRequest.SEND_RARP, u64],
  [FrontendRequest.NET_SET_MTU, u64],
  [FrontendRequest.SET_BACKEND_REQ_FD, { ...none, minFds: 1, maxFds: 1 }],
  [FrontendRequest.IOTLB_MSG, { payload: 'iotlb', sizes: [IOTLB_SIZE], minFds: 0, maxFds: 0, reply: 'always' }],
  [FrontendRequest.SET_VRING_ENDIAN, state],
  [FrontendRequest.GET_CONFIG, { ...config, reply: 'always' }],
  [FrontendRequest.SET_CONFIG, config],
  [FrontendRequest.CLOSE_CRYPTO_SESSION, u64],
  [FrontendRequest.POSTCOPY_ADVISE, { ...none, reply: 'always' }],
  [FrontendRequest.POSTCOPY_LISTEN, none],
  [FrontendRequest.POSTCOPY_END, getU64],
  // The spec's table lists no fd, but the reply carries the inflight memfd.
  [FrontendRequest.GET_INFLIGHT_FD, { ...inflight, reply: 'always' }],
  [FrontendRequest.SET_INFLIGHT_FD, { ...inflight, minFds: 1, maxFds: 1 }],
  [FrontendRequest.GPU_SET_SOCKET, { ...none, minFds: 1, maxFds: 1 }],
  [FrontendRequest.RESET_DEVICE, none],
  [FrontendRequest.VRING_KICK, state],
  [FrontendRequest.GET_MAX_MEM_SLOTS, getU64],
  // "Exactly one file descriptor from which the memory is mapped is passed in the ancillary data."
  [FrontendRequest.ADD_MEM_REG, { payload: 'single-region', sizes: [SINGLE_REGION_SIZE], minFds: 1, maxFds: 1, reply: 'none' }],
  // "the back-end MAY accept messages with one file descriptor. If a file descriptor is passed,
  //  the back-end MUST close it without using it otherwise."
  [FrontendRequest.REM_MEM_REG, { payload: 'single-region', sizes: [SINGLE_REGION_SIZE], minFds: 0, maxFds: 1, reply: 'none' }],
  [FrontendRequest.SET_STATUS, u64],
  [FrontendRequest.GET_STATUS, getU64],
]);

/** The rule of a front-end request, or undefined for a code the back-end does not know. */
export function frontendRequestRule(request: number): RequestRule | undefined {
  return FRONTEND_REQUEST_RULES.get(request as FrontendRequest);
}

/**
 * Checks a front-end request's size and fd count against its rule (the
 * header itself is checked by `validateHeader`). Throws {@link ProtocolError}
 * for an unknown request, a size the request never has, or a wrong fd count.
 */
export function checkFrontendRequest(header: MessageHeader, fdCount: number): RequestRule {
  const name = frontendRequestName(header.request);
  if (fdCount > MAX_FDS_PER_MESSAGE) throw new ProtocolError(`${name}: ${fdCount} fds, at most ${MAX_FDS_PER_MESSAGE}`, header.request);
  const rule = frontendRequestRule(header.request);
  if (rule === undefined) throw new ProtocolError(`unknown request ${name}`, header.request);
  const sizeOk = rule.range === true
    ? header.size >= (rule.sizes[0] ?? 0) && header.size <= (rule.sizes[1] ?? 0)
    : rule.sizes.includes(header.size);
  if (!sizeOk) {
    const expected = rule.range === true ? `${rule.sizes[0]}..${rule.sizes[1]}` : rule.sizes.join(' or ');
    throw new ProtocolError(`${name}: payload size ${header.size}, expected ${expected}`, header.request);
  }
  if (fdCount < rule.minFds || fdCount > rule.maxFds) {
    const expected = rule.minFds === rule.maxFds ? `${rule.minFds}` : `${rule.minFds}..${rule.maxFds}`;
    throw new ProtocolError(`${name}: ${fdCount} fd(s) attached, expected ${expected}`, header.request);
  }
  return rule;
}

/**
 * True when the back-end answers `request` with a reply body given the
 * negotiated protocol features. Such requests get no extra REPLY_ACK ack:
 * "For the message types that already solicit a reply from the back-end, the
 * presence of VHOST_USER_PROTOCOL_F_REPLY_ACK or need_reply bit being set
 * brings no behavioural change."
 */
export function hasReplyBody(request: number, protocolFeatures: bigint): boolean {
  const rule = frontendRequestRule(request);
  if (rule === undefined) return false;
  if (rule.reply === 'always') return true;
  if (rule.reply === 'with-feature' && rule.replyFeature !== undefined) return hasBit(protocolFeatures, rule.replyFeature);
  return false;
}
