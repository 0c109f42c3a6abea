import { describe, expect, it } from 'vitest';
import {
  formatMac, internetChecksum, isMulticastDst, MacTable, macToNumber, parseIpv4, parseMac, respondInPlace,
  RESPOND_ARP, RESPOND_ICMP, RESPOND_NONE, swapMacs,
} from '@vhost-ts/net/packet/index';

const ourMac = parseMac('02:00:00:00:00:01');
const guestMac = parseMac('52:54:00:12:34:56');
const ourIp = parseIpv4('10.0.0.1');

function arpRequest(targetIp: string): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6);
  f.set(guestMac, 6);
  f.set([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], 12);
  f.set(guestMac, 22);
  f.set([10, 0, 0, 2], 28);
  f.set(targetIp.split('.').map(Number), 38);
  return f;
}

function echoRequest(dst: string, payload = 56): Uint8Array {
  const total = 20 + 8 + payload;
  const f = new Uint8Array(14 + total);
  f.set(ourMac, 0);
  f.set(guestMac, 6);
  f.set([0x08, 0x00], 12);
  f.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 2], 14);
  f.set(dst.split('.').map(Number), 30);
  const ipSum = internetChecksum(f, 14, 20);
  f[24] = ipSum >> 8;
  f[25] = ipSum & 0xff;
  f.set([8, 0, 0, 0, 0x12, 0x34, 0, 7], 34);
  for (let i = 0; i < payload; i++) f[42 + i] = i;
  const sum = internetChecksum(f, 34, 8 + payload);
  f[36] = sum >> 8;
  f[37] = sum & 0xff;
  return f;
}

describe('responder', () => {
  it('answers an ARP request for its address', () => {
    const f = arpRequest('10.0.0.1');
    expect(respondInPlace(f, 0, f.length, ourIp, ourMac)).toBe(RESPOND_ARP);
    expect(formatMac(f, 0)).toBe('52:54:00:12:34:56');
    expect(formatMac(f, 6)).toBe('02:00:00:00:00:01');
    expect(f[21]).toBe(2); // reply
    expect(formatMac(f, 22)).toBe('02:00:00:00:00:01');
    expect([...f.subarray(28, 32)]).toEqual([10, 0, 0, 1]);
    expect(formatMac(f, 32)).toBe('52:54:00:12:34:56');
    expect([...f.subarray(38, 42)]).toEqual([10, 0, 0, 2]);
  });
  it('ignores ARP for another address and truncated frames', () => {
    const f = arpRequest('10.0.0.9');
    const copy = f.slice();
    expect(respondInPlace(f, 0, f.length, ourIp, ourMac)).toBe(RESPOND_NONE);
    expect(f).toEqual(copy);
    expect(respondInPlace(f, 0, 30, ourIp, ourMac)).toBe(RESPOND_NONE);
  });
  it('answers an ICMP echo request with valid checksums', () => {
    const f = echoRequest('10.0.0.1');
    expect(respondInPlace(f, 0, f.length, ourIp, ourMac)).toBe(RESPOND_ICMP);
    expect(f[34]).toBe(0); // echo reply
    expect(internetChecksum(f, 14, 20)).toBe(0);
    expect(internetChecksum(f, 34, f.length - 34)).toBe(0);
    expect([...f.subarray(26, 34)]).toEqual([10, 0, 0, 1, 10, 0, 0, 2]);
    expect(formatMac(f, 0)).toBe('52:54:00:12:34:56');
    expect(f[46]).toBe(4); // payload untouched
  });
  it('ignores echo to another address and a lying IP total length', () => {
    const f = echoRequest('10.0.0.3');
    expect(respondInPlace(f, 0, f.length, ourIp, ourMac)).toBe(RESPOND_NONE);
    const g = echoRequest('10.0.0.1');
    expect(respondInPlace(g, 0, g.length - 1, ourIp, ourMac)).toBe(RESPOND_NONE);
  });
});

describe('ethernet helpers', () => {
  it('swaps MACs and detects multicast', () => {
    const f = arpRequest('10.0.0.1');
    expect(isMulticastDst(f, 0)).toBe(true);
    swapMacs(f, 0);
    expect(formatMac(f, 0)).toBe('52:54:00:12:34:56');
    expect(formatMac(f, 6)).toBe('ff:ff:ff:ff:ff:ff');
    expect(isMulticastDst(f, 0)).toBe(false);
  });
  it('rejects bad addresses', () => {
    expect(() => parseMac('52:54:00:12:34')).toThrow(/bad MAC/);
    expect(() => parseIpv4('10.0.0.256')).toThrow(/bad IPv4/);
  });
  it('maps a MAC to an exact number', () => expect(macToNumber(parseMac('ff:ff:ff:ff:ff:ff'), 0)).toBe(2 ** 48 - 1));
});

describe('MacTable', () => {
  it('learns, looks up, ages out and forgets ports', () => {
    const t = new MacTable(2, 1000);
    t.learn(1, 0, 0);
    t.learn(2, 1, 0);
    expect(t.lookup(1, 500)).toBe(0);
    t.learn(3, 1, 600); // evicts the first learned (1)
    expect(t.lookup(1, 600)).toBe(-1);
    expect(t.lookup(3, 600)).toBe(1);
    expect(t.lookup(2, 1500)).toBe(-1); // aged out
    t.forgetPort(1);
    expect(t.size).toBe(0);
  });
});
