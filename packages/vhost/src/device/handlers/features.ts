/**
 * Feature negotiation, ownership, status and resets.
 */
import { VIRTIO_F_RING_PACKED } from '../../features.js';
import { check } from '../../errors.js';
import { MAX_MEM_TABLE_REGIONS, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, bit, hasBit } from '../../protocol/constants.js';
import { decodeU64, encodeU64 } from '../../protocol/payloads.js';
import type { Incoming, Outcome, Session } from '../session.js';

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

/** GET_FEATURES: the features the driver offers. "may arrive any time". */
export function getFeatures(s: Session): Outcome {
  return { reply: encodeU64(s.config.offeredFeatures()) };
}

/**
 * SET_FEATURES: only offered bits; while the device runs only VHOST_F_LOG_ALL
 * may change (-> featuresChanged). Without bit 30 every ring is enabled now:
 * "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts
 * directly in the enabled state." SET_FEATURES never disables a ring.
 */
export async function setFeatures(s: Session, msg: Incoming): Promise<Outcome> {
  const features = decodeU64(msg.payload);
  const offered = s.config.offeredFeatures();
  check((features & ~offered) === 0n, () => `features ${hex(features)} include bits the back-end did not offer: ${hex(features & ~offered)}`);
  const st = s.state;
  const old = st.features;
  if (st.running) {
    const changed = old ^ features;
    check((changed & ~bit(VHOST_F_LOG_ALL)) === 0n, () => `features other than LOG_ALL cannot change while the device runs (changed ${hex(changed)})`);
  }
  st.features = features;
  st.featuresSet = true;
  const packed = hasBit(features, VIRTIO_F_RING_PACKED);
  for (const v of st.vrings) {
    if (v.packed === packed) continue;
    v.packed = packed;
    // A base set before the layout changed is in the other layout's encoding (a split base
    // is any u16, a packed one an index below 0x8000 with wrap counters): it means nothing
    // now. Back to the initial indices; the front-end sends SET_VRING_BASE after SET_FEATURES.
    v.lastAvailIdx = 0;
    v.lastUsedIdx = 0;
    v.availWrapCounter = true;
    v.usedWrapCounter = true;
  }
  if (!hasBit(features, VHOST_USER_F_PROTOCOL_FEATURES)) for (const v of st.vrings) v.enabled = true;
  if (st.running && old !== features) {
    try {
      await s.invoke('featuresChanged', s.device, features);
    } catch (err) {
      st.features = old;
      throw err;
    }
  }
}

/** SET_OWNER: "a session start flag". */
export function setOwner(s: Session): Outcome {
  s.state.owner = true;
}

/**
 * RESET_OWNER (deprecated): "back-ends either ignore this message, or use it
 * to disable all rings". The device stops and every ring is disabled; the
 * connection state (memory, features) is kept.
 */
export async function resetOwner(s: Session): Promise<Outcome> {
  await s.destroyDevice('RESET_OWNER');
  for (const v of s.state.vrings) v.enabled = false;
}

/** GET_PROTOCOL_FEATURES: legal once bit 30 is offered, even before SET_FEATURES. */
export function getProtocolFeatures(s: Session): Outcome {
  check(hasBit(s.config.offeredFeatures(), VHOST_USER_F_PROTOCOL_FEATURES), 'VHOST_USER_F_PROTOCOL_FEATURES is not offered');
  return { reply: encodeU64(s.config.offeredProtocolFeatures()) };
}

/** SET_PROTOCOL_FEATURES: only offered bits. */
export function setProtocolFeatures(s: Session, msg: Incoming): Outcome {
  check(hasBit(s.config.offeredFeatures(), VHOST_USER_F_PROTOCOL_FEATURES), 'VHOST_USER_F_PROTOCOL_FEATURES is not offered');
  const pf = decodeU64(msg.payload);
  const offered = s.config.offeredProtocolFeatures();
  check((pf & ~offered) === 0n, () => `protocol features ${hex(pf)} include bits the back-end did not offer: ${hex(pf & ~offered)}`);
  s.state.protocolFeatures = pf;
}

/** GET_QUEUE_NUM: the maximum number of queues (MQ). */
export function getQueueNum(s: Session): Outcome {
  return { reply: encodeU64(BigInt(s.config.queueNum)) };
}

/** SET_STATUS: the virtio device status byte. */
export async function setStatus(s: Session, msg: Incoming): Promise<Outcome> {
  const status = decodeU64(msg.payload);
  check(status <= 0xffn, () => `device status ${hex(status)} is wider than 8 bits`);
  s.state.status = Number(status);
  await s.invoke('statusChanged', s.device, s.state.status);
}

/** GET_STATUS. */
export function getStatus(s: Session): Outcome {
  return { reply: encodeU64(BigInt(s.state.status)) };
}

/**
 * RESET_DEVICE: "disable all rings and reset all internal device state to the
 * initial state, ready to be reinitialized. The back-end retains ownership".
 * Rings (fds closed), features and status are reset; the negotiated protocol
 * features and the memory table, log and inflight area are kept.
 */
export async function resetDevice(s: Session): Promise<Outcome> {
  await s.destroyDevice('RESET_DEVICE');
  const st = s.state;
  for (const v of st.vrings) s.closeFds(v.reset());
  st.features = 0n;
  st.featuresSet = false;
  st.status = 0;
}

/** Most memory slots (regions) the back-end accepts: 8, as SET_MEM_TABLE. */
export const MAX_MEM_SLOTS = MAX_MEM_TABLE_REGIONS;
