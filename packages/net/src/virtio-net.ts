/**
 * virtio-net device facts shared by the control side and the data path: the
 * header (`struct virtio_net_hdr_v1`), the config space
 * (`struct virtio_net_config`) and the feature set this back-end offers.
 * Sources: virtio 1.2 §5.1 (device-types/net), Linux include/uapi/linux/virtio_net.h.
 */
import {
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  featureBit,
  hasFeature,
} from '@vhost-ts/virtio';

// ---------------------------------------------------------------------------
// The header that precedes every frame on both rings.

/** `struct virtio_net_hdr_v1`: with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF (num_buffers present). */
export const NET_HDR_V1_LEN = 12;
/** Legacy `struct virtio_net_hdr` without num_buffers. */
export const NET_HDR_LEGACY_LEN = 10;

/** Byte offsets in the header (little-endian u16 fields). */
export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const HDR_HDR_LEN = 2;
export const HDR_GSO_SIZE = 4;
export const HDR_CSUM_START = 6;
export const HDR_CSUM_OFFSET = 8;
export const HDR_NUM_BUFFERS = 10;

/** flags: "use csum_start, csum_offset" (the driver left a partial checksum). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** flags (RX only): the checksum was validated. */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** gso_type values. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** Header length for the negotiated features: 12 with VERSION_1 or MRG_RXBUF, else 10. */
export function netHeaderLength(features: bigint): number {
  return hasFeature(features, VIRTIO_F_VERSION_1) || hasFeature(features, VIRTIO_NET_F_MRG_RXBUF) ? NET_HDR_V1_LEN : NET_HDR_LEGACY_LEN;
}

/** Ethernet header bytes; a frame shorter than this is malformed. */
export const MIN_FRAME = 14;
/** Largest frame the data path accepts: MTU 65535 + Ethernet header + one VLAN tag. */
export const MAX_FRAME = 65535 + 14 + 4;

// ---------------------------------------------------------------------------
// Config space: struct virtio_net_config { u8 mac[6]; le16 status; le16 max_virtqueue_pairs; le16 mtu; ... }

export const NET_CONFIG_MAC = 0;
export const NET_CONFIG_STATUS = 6;
export const NET_CONFIG_MAX_VQ_PAIRS = 8;
export const NET_CONFIG_MTU = 10;
/** Bytes of the config fields we serve (mac, status, max_virtqueue_pairs, mtu). */
export const NET_CONFIG_SIZE = 12;

/** status bits. */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** The config space fields this back-end serves. */
export interface NetConfig {
  /** 6 bytes. */
  mac: Uint8Array;
  /** VIRTIO_NET_S_* bits. */
  status: number;
  maxVirtqueuePairs: number;
  mtu: number;
}

/** Encodes the config space (12 bytes, little-endian u16 fields). */
export function encodeNetConfig(c: NetConfig): Uint8Array {
  if (c.mac.length !== 6) throw new RangeError(`MAC must be 6 bytes, got ${c.mac.length}`);
  for (const [name, v] of [['status', c.status], ['max_virtqueue_pairs', c.maxVirtqueuePairs], ['mtu', c.mtu]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`config ${name} ${v} is not a u16`);
  }
  const out = new Uint8Array(NET_CONFIG_SIZE);
  const dv = new DataView(out.buffer);
  out.set(c.mac, NET_CONFIG_MAC);
  dv.setUint16(NET_CONFIG_STATUS, c.status, true);
  dv.setUint16(NET_CONFIG_MAX_VQ_PAIRS, c.maxVirtqueuePairs, true);
  dv.setUint16(NET_CONFIG_MTU, c.mtu, true);
  return out;
}

/** Decodes what {@link encodeNetConfig} wrote (at least 12 bytes). */
export function decodeNetConfig(b: Uint8Array): NetConfig {
  if (b.length < NET_CONFIG_SIZE) throw new RangeError(`net config needs ${NET_CONFIG_SIZE} bytes, got ${b.length}`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    mac: b.slice(NET_CONFIG_MAC, NET_CONFIG_MAC + 6),
    status: dv.getUint16(NET_CONFIG_STATUS, true),
    maxVirtqueuePairs: dv.getUint16(NET_CONFIG_MAX_VQ_PAIRS, true),
    mtu: dv.getUint16(NET_CONFIG_MTU, true),
  };
}

// ---------------------------------------------------------------------------
// Features.

/** What the feature set depends on. */
export interface NetFeatureOptions {
  /** Queue pairs offered (MQ is offered when > 1). */
  queuePairs: number;
  /** Offer VIRTIO_NET_F_MTU (and the config mtu). */
  mtu: boolean;
  /** Offer VIRTIO_NET_F_MAC (and the config mac). */
  mac: boolean;
  /**
   * Offer VIRTIO_F_IN_ORDER: only when the module completes each ring's chains
   * in the order it popped them (every shipped module does).
   */
  inOrder: boolean;
  /** Offer VIRTIO_F_RING_PACKED (default true). */
  packed?: boolean;
}

/**
 * The virtio feature bits offered to the front-end: transport (VERSION_1,
 * ANY_LAYOUT, INDIRECT_DESC, EVENT_IDX, RING_PACKED, IN_ORDER if correct),
 * vhost-user (PROTOCOL_FEATURES, LOG_ALL) and net (CSUM, GUEST_CSUM, MRG_RXBUF,
 * STATUS, MTU, MAC, MQ). CSUM/GUEST_CSUM are offload metadata the data path
 * passes through (or completes in software when the receiver lacks GUEST_CSUM).
 */
export function netFeatures(o: NetFeatureOptions): bigint {
  let f =
    featureBit(VIRTIO_F_VERSION_1) |
    featureBit(VIRTIO_F_ANY_LAYOUT) |
    featureBit(VIRTIO_F_INDIRECT_DESC) |
    featureBit(VIRTIO_F_EVENT_IDX) |
    featureBit(VHOST_USER_F_PROTOCOL_FEATURES) |
    featureBit(VHOST_F_LOG_ALL) |
    featureBit(VIRTIO_NET_F_CSUM) |
    featureBit(VIRTIO_NET_F_GUEST_CSUM) |
    featureBit(VIRTIO_NET_F_MRG_RXBUF) |
    featureBit(VIRTIO_NET_F_STATUS);
  if (o.packed !== false) f |= featureBit(VIRTIO_F_RING_PACKED);
  if (o.inOrder) f |= featureBit(VIRTIO_F_IN_ORDER);
  if (o.mtu) f |= featureBit(VIRTIO_NET_F_MTU);
  if (o.mac) f |= featureBit(VIRTIO_NET_F_MAC);
  if (o.queuePairs > 1) f |= featureBit(VIRTIO_NET_F_MQ);
  return f;
}

/** Names of the feature bits we know, for `--print-capabilities` and logs. */
export const NET_FEATURE_NAMES: Readonly<Record<number, string>> = {
  0: 'CSUM',
  1: 'GUEST_CSUM',
  3: 'MTU',
  5: 'MAC',
  15: 'MRG_RXBUF',
  16: 'STATUS',
  22: 'MQ',
  26: 'LOG_ALL',
  27: 'ANY_LAYOUT',
  28: 'INDIRECT_DESC',
  29: 'EVENT_IDX',
  30: 'PROTOCOL_FEATURES',
  32: 'VERSION_1',
  34: 'RING_PACKED',
  35: 'IN_ORDER',
};

/** Feature names of a feature word (unknown bits as `BIT<n>`), ascending bit order. */
export function netFeatureNames(features: bigint): string[] {
  const out: string[] = [];
  for (let b = 0; b < 64; b++) if (hasFeature(features, b)) out.push(NET_FEATURE_NAMES[b] ?? `BIT${b}`);
  return out;
}
