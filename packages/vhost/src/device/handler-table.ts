/**
 * The one table from request code to handler, with the protocol feature a
 * request needs. A request missing here is refused as unsupported.
 */
import { FrontendRequest, ProtocolFeature } from '../protocol/constants.js';
import type { Incoming, Outcome, Session } from './session.js';
import * as features from './handlers/features.js';
import * as memory from './handlers/memory.js';
import * as vring from './handlers/vring.js';
import * as extras from './handlers/extras.js';

export interface HandlerEntry {
  handle(session: Session, msg: Incoming): Outcome | Promise<Outcome>;
  /** Protocol feature that must have been negotiated (SET_PROTOCOL_FEATURES). */
  requires?: ProtocolFeature;
  /** The request's own failure answer, sent instead of closing (GET_CONFIG: an empty payload). */
  failureReply?: () => Uint8Array;
}

const entries: Array<[FrontendRequest, HandlerEntry]> = [
  [FrontendRequest.GET_FEATURES, { handle: features.getFeatures }],
  [FrontendRequest.SET_FEATURES, { handle: features.setFeatures }],
  [FrontendRequest.SET_OWNER, { handle: features.setOwner }],
  [FrontendRequest.RESET_OWNER, { handle: features.resetOwner }],
  [FrontendRequest.GET_PROTOCOL_FEATURES, { handle: features.getProtocolFeatures }],
  [FrontendRequest.SET_PROTOCOL_FEATURES, { handle: features.setProtocolFeatures }],
  [FrontendRequest.GET_QUEUE_NUM, { handle: features.getQueueNum, requires: ProtocolFeature.MQ }],
  [FrontendRequest.SET_STATUS, { handle: features.setStatus, requires: ProtocolFeature.STATUS }],
  [FrontendRequest.GET_STATUS, { handle: features.getStatus, requires: ProtocolFeature.STATUS }],
  [FrontendRequest.RESET_DEVICE, { handle: features.resetDevice, requires: ProtocolFeature.RESET_DEVICE }],

  [FrontendRequest.SET_MEM_TABLE, { handle: memory.setMemTable }],
  [FrontendRequest.GET_MAX_MEM_SLOTS, { handle: memory.getMaxMemSlots, requires: ProtocolFeature.CONFIGURE_MEM_SLOTS }],
  [FrontendRequest.ADD_MEM_REG, { handle: memory.addMemReg, requires: ProtocolFeature.CONFIGURE_MEM_SLOTS }],
  [FrontendRequest.REM_MEM_REG, { handle: memory.remMemReg, requires: ProtocolFeature.CONFIGURE_MEM_SLOTS }],
  [FrontendRequest.SET_LOG_BASE, { handle: memory.setLogBase, requires: ProtocolFeature.LOG_SHMFD }],
  [FrontendRequest.SET_LOG_FD, { handle: memory.setLogFd }],

  [FrontendRequest.SET_VRING_NUM, { handle: vring.setVringNum }],
  [FrontendRequest.SET_VRING_ADDR, { handle: vring.setVringAddr }],
  [FrontendRequest.SET_VRING_BASE, { handle: vring.setVringBase }],
  [FrontendRequest.GET_VRING_BASE, { handle: vring.getVringBase }],
  [FrontendRequest.SET_VRING_KICK, { handle: vring.setVringKick }],
  [FrontendRequest.SET_VRING_CALL, { handle: vring.setVringCall }],
  [FrontendRequest.SET_VRING_ERR, { handle: vring.setVringErr }],
  [FrontendRequest.SET_VRING_ENABLE, { handle: vring.setVringEnable }],

  [FrontendRequest.SEND_RARP, { handle: extras.sendRarp, requires: ProtocolFeature.RARP }],
  [FrontendRequest.NET_SET_MTU, { handle: extras.netSetMtu, requires: ProtocolFeature.NET_MTU }],
  [FrontendRequest.SET_BACKEND_REQ_FD, { handle: extras.setBackendReqFd, requires: ProtocolFeature.BACKEND_REQ }],
  // "vhost-user back-end uses zero length of payload to indicate an error to the vhost-user front-end"
  [FrontendRequest.GET_CONFIG, { handle: extras.getConfig, requires: ProtocolFeature.CONFIG, failureReply: () => new Uint8Array(0) }],
  [FrontendRequest.SET_CONFIG, { handle: extras.setConfig, requires: ProtocolFeature.CONFIG }],
  [FrontendRequest.GET_INFLIGHT_FD, { handle: extras.getInflightFd, requires: ProtocolFeature.INFLIGHT_SHMFD }],
  [FrontendRequest.SET_INFLIGHT_FD, { handle: extras.setInflightFd, requires: ProtocolFeature.INFLIGHT_SHMFD }],
];

export const HANDLERS: ReadonlyMap<FrontendRequest, HandlerEntry> = new Map(entries);
