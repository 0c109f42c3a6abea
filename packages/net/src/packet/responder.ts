import { ETH_ADDR_LEN, ETH_DST, ETH_HEADER_LEN, ETH_SRC, ETHERTYPE_ARP, ETHERTYPE_IPV4, etherType } from './ethernet.js';
import {
  ARP_HLEN, ARP_HTYPE, ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, ARP_OPER, ARP_PLEN, ARP_PTYPE, ARP_SHA, ARP_SPA,
  ARP_THA, ARP_TPA, ICMP_CODE, ICMP_CSUM, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TYPE, IPPROTO_ICMP, IPV4_CSUM,
  IPV4_DST, IPV4_PROTO, IPV4_SRC, IPV4_TOTAL_LEN, IPV4_TTL, IPV4_VER_IHL, internetChecksum, readBe32, writeBe32,
} from './ipv4.js';

/** What {@link respondInPlace} did with a frame. */
export const RESPOND_NONE = 0;
export const RESPOND_ARP = 1;
export const RESPOND_ICMP = 2;

/**
 * Turns an ARP request for `ip` or an ICMP echo request to `ip` into its reply,
 * in place, in `buf[off, off+len)`, answering as `mac`. Returns RESPOND_ARP or
 * RESPOND_ICMP when the frame now holds a reply of the same length, RESPOND_NONE
 * (frame untouched) for anything else, including malformed or truncated frames.
 */
export function respondInPlace(buf: Uint8Array, off: number, len: number, ip: number, mac: Uint8Array): number {
  if (len < ETH_HEADER_LEN) return RESPOND_NONE;
  const type = etherType(buf, off);
  const l3 = off + ETH_HEADER_LEN;
  if (type === ETHERTYPE_ARP) {
    if (len < ETH_HEADER_LEN + ARP_LEN) return RESPOND_NONE;
    if (
      ((buf[l3 + ARP_HTYPE] as number) << 8 | (buf[l3 + ARP_HTYPE + 1] as number)) !== 1 ||
      ((buf[l3 + ARP_PTYPE] as number) << 8 | (buf[l3 + ARP_PTYPE + 1] as number)) !== ETHERTYPE_IPV4 ||
      buf[l3 + ARP_HLEN] !== 6 || buf[l3 + ARP_PLEN] !== 4 ||
      ((buf[l3 + ARP_OPER] as number) << 8 | (buf[l3 + ARP_OPER + 1] as number)) !== ARP_OP_REQUEST ||
      readBe32(buf, l3 + ARP_TPA) !== ip
    ) {
      return RESPOND_NONE;
    }
    // Target becomes the requester; we answer from `mac`/`ip`.
    buf.copyWithin(l3 + ARP_THA, l3 + ARP_SHA, l3 + ARP_SHA + 10); // THA+TPA <- SHA+SPA
    buf.set(mac, l3 + ARP_SHA);
    writeBe32(buf, l3 + ARP_SPA, ip);
    buf[l3 + ARP_OPER] = 0;
    buf[l3 + ARP_OPER + 1] = ARP_OP_REPLY;
    buf.copyWithin(off + ETH_DST, off + ETH_SRC, off + ETH_SRC + ETH_ADDR_LEN);
    buf.set(mac, off + ETH_SRC);
    return RESPOND_ARP;
  }
  if (type !== ETHERTYPE_IPV4 || len < ETH_HEADER_LEN + 20) return RESPOND_NONE;
  const verIhl = buf[l3 + IPV4_VER_IHL] as number;
  const ihl = (verIhl & 0x0f) * 4;
  if (verIhl >> 4 !== 4 || ihl < 20) return RESPOND_NONE;
  const total = ((buf[l3 + IPV4_TOTAL_LEN] as number) << 8) | (buf[l3 + IPV4_TOTAL_LEN + 1] as number);
  if (total < ihl + 8 || ETH_HEADER_LEN + total > len) return RESPOND_NONE;
  if (buf[l3 + IPV4_PROTO] !== IPPROTO_ICMP || readBe32(buf, l3 + IPV4_DST) !== ip) return RESPOND_NONE;
  const icmp = l3 + ihl;
  if (buf[icmp + ICMP_TYPE] !== ICMP_ECHO_REQUEST || buf[icmp + ICMP_CODE] !== 0) return RESPOND_NONE;
  // IP: swap addresses, fresh TTL, new header checksum.
  const src = readBe32(buf, l3 + IPV4_SRC);
  writeBe32(buf, l3 + IPV4_DST, src);
  writeBe32(buf, l3 + IPV4_SRC, ip);
  buf[l3 + IPV4_TTL] = 64;
  buf[l3 + IPV4_CSUM] = 0;
  buf[l3 + IPV4_CSUM + 1] = 0;
  const ipSum = internetChecksum(buf, l3, ihl);
  buf[l3 + IPV4_CSUM] = ipSum >> 8;
  buf[l3 + IPV4_CSUM + 1] = ipSum & 0xff;
  // ICMP: echo reply, checksum over the whole ICMP message.
  buf[icmp + ICMP_TYPE] = ICMP_ECHO_REPLY;
  buf[icmp + ICMP_CSUM] = 0;
  buf[icmp + ICMP_CSUM + 1] = 0;
  const icmpSum = internetChecksum(buf, icmp, total - ihl);
  buf[icmp + ICMP_CSUM] = icmpSum >> 8;
  buf[icmp + ICMP_CSUM + 1] = icmpSum & 0xff;
  buf.copyWithin(off + ETH_DST, off + ETH_SRC, off + ETH_SRC + ETH_ADDR_LEN);
  buf.set(mac, off + ETH_SRC);
  return RESPOND_ICMP;
}
