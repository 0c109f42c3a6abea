/** IPv4 (RFC 791), ARP (RFC 826) and ICMP echo (RFC 792) layouts, offsets relative to the L3 header. */
export const IPV4_VER_IHL = 0;
export const IPV4_TOTAL_LEN = 2;
export const IPV4_TTL = 8;
export const IPV4_PROTO = 9;
export const IPV4_CSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPPROTO_ICMP = 1;

export const ARP_HTYPE = 0;
export const ARP_PTYPE = 2;
export const ARP_HLEN = 4;
export const ARP_PLEN = 5;
export const ARP_OPER = 6;
export const ARP_SHA = 8;
export const ARP_SPA = 14;
export const ARP_THA = 18;
export const ARP_TPA = 24;
export const ARP_LEN = 28;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CSUM = 2;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

/** Parses dotted-quad IPv4 text into a 32-bit unsigned number; throws on anything else. */
export function parseIpv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`bad IPv4 address '${text}' (expected A.B.C.D)`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Reads a big-endian u32 (an IPv4 address) as an unsigned number. */
export function readBe32(buf: Uint8Array, off: number): number {
  return (((buf[off] as number) << 24) >>> 0) + (((buf[off + 1] as number) << 16) | ((buf[off + 2] as number) << 8) | (buf[off + 3] as number));
}

/** Writes a big-endian u32. */
export function writeBe32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 24) & 0xff;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/**
 * The Internet checksum (RFC 1071) over `buf[off, off+len)`: the 16-bit ones'
 * complement of the ones' complement sum. A header whose checksum field is
 * correct sums to 0.
 */
export function internetChecksum(buf: Uint8Array, off: number, len: number): number {
  let sum = 0;
  let i = 0;
  for (; i + 1 < len; i += 2) sum += ((buf[off + i] as number) << 8) | (buf[off + i + 1] as number);
  if (i < len) sum += (buf[off + i] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
