import { ETH_ADDR_LEN, ETH_DST, ETH_HEADER_LEN, ETH_SRC, ETH_TYPE, ETHERTYPE_IPV4 } from './ethernet.js';
import { ARP_HLEN, ARP_HTYPE, ARP_OPER, ARP_PLEN, ARP_PTYPE, ARP_SHA, ARP_THA } from './ipv4.js';

/** EtherType of RARP (RFC 903). */
export const ETHERTYPE_RARP = 0x8035;
/** RARP "request reverse" opcode. */
export const RARP_OP_REQUEST_REVERSE = 3;
/** Minimum Ethernet frame without FCS: RARP announcements are padded to it. */
export const ETH_MIN_FRAME = 60;

/**
 * Writes the gratuitous RARP a vhost-user back-end sends on SEND_RARP (as DPDK's
 * make_rarp_packet and QEMU's announce do) into buf[off, off+60): broadcast
 * destination, source and sender/target hardware address `mac`, protocol
 * addresses 0, opcode 3 (request reverse), zero padding. Returns the length (60).
 */
export function writeRarpAnnouncement(buf: Uint8Array, off: number, mac: Uint8Array): number {
  if (mac.length !== ETH_ADDR_LEN) throw new RangeError(`MAC must be 6 bytes, got ${mac.length}`);
  if (off < 0 || off + ETH_MIN_FRAME > buf.length) throw new RangeError('buffer too small for a RARP frame');
  buf.fill(0, off, off + ETH_MIN_FRAME);
  buf.fill(0xff, off + ETH_DST, off + ETH_DST + ETH_ADDR_LEN);
  buf.set(mac, off + ETH_SRC);
  buf[off + ETH_TYPE] = ETHERTYPE_RARP >> 8;
  buf[off + ETH_TYPE + 1] = ETHERTYPE_RARP & 0xff;
  const l3 = off + ETH_HEADER_LEN;
  buf[l3 + ARP_HTYPE + 1] = 1; // Ethernet
  buf[l3 + ARP_PTYPE] = ETHERTYPE_IPV4 >> 8;
  buf[l3 + ARP_PTYPE + 1] = ETHERTYPE_IPV4 & 0xff;
  buf[l3 + ARP_HLEN] = ETH_ADDR_LEN;
  buf[l3 + ARP_PLEN] = 4;
  buf[l3 + ARP_OPER + 1] = RARP_OP_REQUEST_REVERSE;
  buf.set(mac, l3 + ARP_SHA);
  buf.set(mac, l3 + ARP_THA);
  return ETH_MIN_FRAME;
}
