/**
 * Feature sets are 64-bit: at API level (control plane) they are `bigint`.
 * Bit numbers are plain numbers (see constants.ts for the transport bits).
 */

// virtio-net feature bits (virtio 1.2 section 5.1.3).
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_CTRL_RX = 18;
export const VIRTIO_NET_F_CTRL_VLAN = 19;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
export const VIRTIO_NET_F_SPEED_DUPLEX = 63;

// virtio-blk feature bits (virtio 1.2 section 5.2.3).
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

/** Mask with one bit set. Throws on a bit outside 0..63. */
export function featureBit(bit: number): bigint {
  if (!Number.isInteger(bit) || bit < 0 || bit > 63) throw new RangeError(`feature bit ${bit} outside 0..63`);
  return 1n << BigInt(bit);
}

/** True when `bit` is set in the 64-bit feature set. */
export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/** The feature set with `bit` set. */
export function withFeature(features: bigint, bit: number): bigint {
  return features | featureBit(bit);
}

/** The feature set with `bit` cleared. */
export function withoutFeature(features: bigint, bit: number): bigint {
  return features & ~featureBit(bit);
}

/** A mask from a list of bit numbers. */
export function featureMask(...bits: number[]): bigint {
  let m = 0n;
  for (const b of bits) m |= featureBit(b);
  return m;
}

/** Bit numbers set in a feature set, ascending (for logs). */
export function featureBits(features: bigint): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if ((features >> BigInt(b)) & 1n) out.push(b);
  return out;
}

/** Splits a 64-bit feature set into u32 halves (wire encoding helpers). */
export function featuresToHalves(features: bigint): [lo: number, hi: number] {
  const f = BigInt.asUintN(64, features);
  return [Number(f & 0xffffffffn), Number(f >> 32n)];
}

/** Joins u32 halves into a 64-bit feature set. */
export function featuresFromHalves(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}
