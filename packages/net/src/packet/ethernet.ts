/** Ethernet II frame layout (IEEE 802.3): offsets within a frame, no VLAN tags. */
export const ETH_DST = 0;
export const ETH_SRC = 6;
export const ETH_TYPE = 12;
export const ETH_HEADER_LEN = 14;
export const ETH_ADDR_LEN = 6;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;

/** Reads the EtherType (big-endian) of the frame at `off`. */
export function etherType(buf: Uint8Array, off: number): number {
  return ((buf[off + ETH_TYPE] as number) << 8) | (buf[off + ETH_TYPE + 1] as number);
}

/** Swaps destination and source MAC addresses in place (testpmd's macswap). */
export function swapMacs(buf: Uint8Array, off: number): void {
  for (let i = 0; i < ETH_ADDR_LEN; i++) {
    const d = buf[off + ETH_DST + i] as number;
    buf[off + ETH_DST + i] = buf[off + ETH_SRC + i] as number;
    buf[off + ETH_SRC + i] = d;
  }
}

/** True when the destination address has the group bit set (broadcast or multicast). */
export function isMulticastDst(buf: Uint8Array, off: number): boolean {
  return ((buf[off + ETH_DST] as number) & 1) === 1;
}

/** The 48-bit MAC at `buf[off..off+6)` as a number (exact: < 2^53), for table keys without allocation. */
export function macToNumber(buf: Uint8Array, off: number): number {
  let n = 0;
  for (let i = 0; i < ETH_ADDR_LEN; i++) n = n * 256 + (buf[off + i] as number);
  return n;
}

/** Parses `52:54:00:12:34:56` into 6 bytes; throws on anything else. */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`bad MAC address '${text}' (expected xx:xx:xx:xx:xx:xx)`);
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

/** Formats 6 bytes as `52:54:00:12:34:56`. */
export function formatMac(mac: Uint8Array, off = 0): string {
  const out: string[] = [];
  for (let i = 0; i < ETH_ADDR_LEN; i++) out.push((mac[off + i] as number).toString(16).padStart(2, '0'));
  return out.join(':');
}
