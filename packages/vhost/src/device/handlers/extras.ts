/**
 * SEND_RARP, NET_SET_MTU, SET_BACKEND_REQ_FD, GET/SET_CONFIG and
 * GET/SET_INFLIGHT_FD.
 */
import { VIRTIO_F_RING_PACKED } from '../../features.js';
import { check } from '../../errors.js';
import { prefixedLogger } from '../../log.js';
import { createInflightArea, mapInflightArea, releaseInflightArea, type InflightArea } from '../../memory/inflight.js';
import { MAX_CONFIG_SIZE, hasBit } from '../../protocol/constants.js';
import { decodeConfig, decodeInflight, decodeRarp, decodeU64, encodeConfig, encodeInflight } from '../../protocol/payloads.js';
import { BackendChannel } from '../backend-channel.js';
import { takeFd, type Incoming, type Outcome, type Session } from '../session.js';

/** SEND_RARP: "The first 6 bytes of the payload contain the mac address of the guest". */
export async function sendRarp(s: Session, msg: Incoming): Promise<Outcome> {
  const mac = decodeRarp(msg.payload);
  s.state.rarpMac = mac;
  await s.invoke('sendRarp', s.device, mac);
}

/** Smallest and largest MTU virtio-net accepts (68 is IPv4's minimum). */
export const MIN_MTU = 68;
export const MAX_MTU = 65535;

/** NET_SET_MTU: "the back-end must respond with zero in case the specified MTU is valid, or non-zero otherwise". */
export async function netSetMtu(s: Session, msg: Incoming): Promise<Outcome> {
  const mtu = decodeU64(msg.payload);
  check(mtu >= BigInt(MIN_MTU) && mtu <= BigInt(MAX_MTU), () => `MTU ${mtu} is outside ${MIN_MTU}..${MAX_MTU}`);
  await s.invoke('mtuChanged', s.device, Number(mtu));
  s.state.mtu = Number(mtu);
}

/** SET_BACKEND_REQ_FD: the socket for back-end initiated requests (replaces any previous one). */
export function setBackendReqFd(s: Session, msg: Incoming): Outcome {
  const fd = takeFd(msg);
  s.state.backend?.close('replaced by a new SET_BACKEND_REQ_FD');
  s.state.backend = new BackendChannel(fd, s.native, prefixedLogger(s.logger, 'backend-req:'));
}

/**
 * GET_CONFIG: "vhost-user back-end's payload size MUST match the front-end's
 * request". Failures are answered with an empty payload (the handler table's
 * failureReply).
 */
export function getConfig(s: Session, msg: Incoming): Outcome {
  const req = decodeConfig(msg.payload);
  const size = req.data.byteLength;
  check(req.offset + size <= MAX_CONFIG_SIZE, () => `GET_CONFIG: offset ${req.offset} + size ${size} beyond the ${MAX_CONFIG_SIZE}-byte config space`);
  const provider = s.config.config;
  check(provider !== undefined, 'GET_CONFIG: the driver has no config space');
  const data = provider.get(s.device, req.offset, size);
  check(data.byteLength <= size, () => `GET_CONFIG: driver returned ${data.byteLength} bytes for a ${size}-byte request`);
  const out = new Uint8Array(size);
  out.set(data);
  return { reply: encodeConfig({ offset: req.offset, flags: req.flags, data: out }) };
}

/** SET_CONFIG: passed to the driver's config space, which may refuse. */
export async function setConfig(s: Session, msg: Incoming): Promise<Outcome> {
  const req = decodeConfig(msg.payload);
  check(req.offset + req.data.byteLength <= MAX_CONFIG_SIZE, () => `SET_CONFIG: offset ${req.offset} + size ${req.data.byteLength} beyond the ${MAX_CONFIG_SIZE}-byte config space`);
  const set = s.config.config?.set;
  check(set !== undefined, 'SET_CONFIG: the driver config space is read-only');
  const result = await set.call(s.config.config, s.device, req.offset, req.data, req.flags);
  check(result !== false, 'SET_CONFIG: refused by the driver');
}

/** Swaps the inflight area (paused when running) and releases the old one. */
async function replaceInflight(s: Session, area: InflightArea): Promise<void> {
  const st = s.state;
  const old = st.inflight;
  await s.whilePaused(
    () => {
      st.inflight = area;
      if (old !== null) releaseInflightArea(s.native, old);
    },
    () => releaseInflightArea(s.native, area),
  );
}

/**
 * GET_INFLIGHT_FD: allocate a memfd of num_queues regions of
 * ALIGN_UP(header + desc * queue_size, 64) (packed layout when RING_PACKED is
 * negotiated), keep it mapped, and answer {mmap_size, 0, num_queues,
 * queue_size} with the fd.
 */
export async function getInflightFd(s: Session, msg: Incoming): Promise<Outcome> {
  const req = decodeInflight(msg.payload);
  const packed = hasBit(s.state.features, VIRTIO_F_RING_PACKED);
  const { area, fd } = createInflightArea(s.native, { numQueues: req.numQueues, queueSize: req.queueSize, packed, maxQueues: s.config.maxQueues }, s.logger);
  try {
    await replaceInflight(s, area);
  } catch (err) {
    s.closeFds([fd]);
    throw err;
  }
  const reply = encodeInflight({ mmapSize: BigInt(area.size), mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize });
  return { reply, fds: [fd] };
}

/** SET_INFLIGHT_FD: map the area the front-end kept across a reconnect and expose it as `dev.inflight`. */
export async function setInflightFd(s: Session, msg: Incoming): Promise<Outcome> {
  const req = decodeInflight(msg.payload);
  const fd = takeFd(msg);
  let area: InflightArea;
  try {
    area = mapInflightArea(s.native, fd, req, {
      packed: hasBit(s.state.features, VIRTIO_F_RING_PACKED),
      maxQueues: s.config.maxQueues,
      sealShrink: s.config.sealRegions,
      requireSealed: s.config.requireSealedMemory,
      logger: s.logger,
    });
  } finally {
    s.closeFds([fd]);
  }
  await replaceInflight(s, area);
}
