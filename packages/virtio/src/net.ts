import type { Chain } from './chain.js';
import { VIRTIO_F_VERSION_1 } from './constants.js';
import { VIRTIO_NET_F_MRG_RXBUF, hasFeature } from './features.js';

/**
 * virtio-net header (virtio 1.2 section 5.1.6): struct virtio_net_hdr {
 * u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start;
 * le16 csum_offset; le16 num_buffers; }. 12 bytes with VERSION_1 or MRG_RXBUF,
 * else the 10-byte legacy header without num_buffers.
 */
export const VIRTIO_NET_HDR_SIZE = 12;
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;
export const NET_HDR_FLAGS = 0;
export const NET_HDR_GSO_TYPE = 1;
export const NET_HDR_HDR_LEN = 2;
export const NET_HDR_GSO_SIZE = 4;
export const NET_HDR_CSUM_START = 6;
export const NET_HDR_CSUM_OFFSET = 8;
export const NET_HDR_NUM_BUFFERS = 10;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

// virtio_net_config: mac[6] @0, status u16 @6, max_virtqueue_pairs u16 @8, mtu u16 @10,
// speed u32 @12, duplex u8 @16.
export const NET_CFG_MAC = 0;
export const NET_CFG_STATUS = 6;
export const NET_CFG_MAX_VQ_PAIRS = 8;
export const NET_CFG_MTU = 10;
export const NET_CFG_SPEED = 12;
export const NET_CFG_DUPLEX = 16;
export const NET_CFG_SIZE = 17;
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** Header size for a negotiated feature set: 12 with VERSION_1 or MRG_RXBUF, else 10. */
export function netHdrSize(features: bigint): number {
  return hasFeature(features, VIRTIO_F_VERSION_1) || hasFeature(features, VIRTIO_NET_F_MRG_RXBUF)
    ? VIRTIO_NET_HDR_SIZE
    : VIRTIO_NET_HDR_LEGACY_SIZE;
}

/** Receive queue index of queue pair i (RX 2i, TX 2i + 1). */
export function netRxQueue(pair: number): number {
  return 2 * pair;
}
export function netTxQueue(pair: number): number {
  return 2 * pair + 1;
}

/** A parsed header; reuse one per worker (parse functions fill it). */
export class NetHeader {
  flags = 0;
  gsoType = 0;
  hdrLen = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;
  /** 1 for a 10-byte legacy header. */
  numBuffers = 1;

  clear(): void {
    this.flags = 0;
    this.gsoType = 0;
    this.hdrLen = 0;
    this.gsoSize = 0;
    this.csumStart = 0;
    this.csumOffset = 0;
    this.numBuffers = 1;
  }
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

/** Parses a header of `size` (10 or 12) bytes at b[off..]. Caller checks the bounds. */
export function parseNetHdr(b: Uint8Array, off: number, size: number, out: NetHeader): void {
  out.flags = b[off + NET_HDR_FLAGS]!;
  out.gsoType = b[off + NET_HDR_GSO_TYPE]!;
  out.hdrLen = u16(b, off + NET_HDR_HDR_LEN);
  out.gsoSize = u16(b, off + NET_HDR_GSO_SIZE);
  out.csumStart = u16(b, off + NET_HDR_CSUM_START);
  out.csumOffset = u16(b, off + NET_HDR_CSUM_OFFSET);
  out.numBuffers = size >= VIRTIO_NET_HDR_SIZE ? u16(b, off + NET_HDR_NUM_BUFFERS) : 1;
}

/** Writes a header of `size` (10 or 12) bytes at b[off..]. Caller checks the bounds. */
export function writeNetHdr(b: Uint8Array, off: number, size: number, h: NetHeader): void {
  b[off + NET_HDR_FLAGS] = h.flags;
  b[off + NET_HDR_GSO_TYPE] = h.gsoType;
  put16(b, off + NET_HDR_HDR_LEN, h.hdrLen);
  put16(b, off + NET_HDR_GSO_SIZE, h.gsoSize);
  put16(b, off + NET_HDR_CSUM_START, h.csumStart);
  put16(b, off + NET_HDR_CSUM_OFFSET, h.csumOffset);
  if (size >= VIRTIO_NET_HDR_SIZE) put16(b, off + NET_HDR_NUM_BUFFERS, h.numBuffers);
}

const scratch = new Uint8Array(VIRTIO_NET_HDR_SIZE);

/**
 * Parses the header at the start of a chain's readable part (TX). Fast path
 * when the first readable segment holds the whole header; else gathers it.
 * Returns false when the readable part is shorter than the header.
 */
export function parseNetHdrFromChain(chain: Chain, size: number, out: NetHeader): boolean {
  if (chain.readableBytes < size || chain.mem === null) return false;
  if (chain.segWritable[0] === 0 && chain.segLen[0]! >= size) {
    parseNetHdr(chain.mem.regions[chain.segRegion[0]!]!.u8, chain.segOffset[0]!, size, out);
    return true;
  }
  chain.read(0, scratch, 0, size);
  parseNetHdr(scratch, 0, size, out);
  return true;
}

/**
 * Writes a header at the start of a chain's writable part (RX), dirty-logged.
 * Returns false when the writable part is shorter than the header.
 */
export function writeNetHdrToChain(chain: Chain, size: number, h: NetHeader): boolean {
  if (chain.writableBytes < size) return false;
  writeNetHdr(scratch, 0, size, h);
  chain.write(0, scratch, 0, size);
  return true;
}

/** Sets num_buffers (MRG_RXBUF) in the 12-byte header at the start of a chain's writable part. */
export function setNumBuffers(chain: Chain, n: number): boolean {
  if (chain.writableBytes < VIRTIO_NET_HDR_SIZE) return false;
  put16(scratch, 0, n);
  chain.write(NET_HDR_NUM_BUFFERS, scratch, 0, 2);
  return true;
}
