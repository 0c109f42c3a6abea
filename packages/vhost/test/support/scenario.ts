/**
 * Standard message sequences for tests, in the order real front-ends use
 * (DPDK virtio-user: SET_OWNER, GET_FEATURES, protocol features, SET_FEATURES,
 * SET_MEM_TABLE, then per ring NUM, BASE, ADDR, KICK, CALL, ENABLE).
 */
import { native } from '@vhost-ts/native';
import { FrontendRequest, ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES, bit, bits } from '@vhost-ts/vhost/protocol';
import { expect } from 'vitest';
import { ScriptedFrontend, TEST_GPA, TEST_UVA, TestMemory, eventfd, ringLayout } from './frontend.js';

/** Features a test driver offers: VERSION_1 | bit 30 | LOG_ALL. */
export const TEST_FEATURES = bits(32, VHOST_USER_F_PROTOCOL_FEATURES, 26);
/** Protocol features the scripted front-end takes by default. */
export const TEST_PROTOCOL = bits(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.LOG_SHMFD, ProtocolFeature.STATUS);

/** Negotiates features and protocol features; returns what the back-end offered. */
export async function negotiate(
  fe: ScriptedFrontend,
  options: { features?: bigint; protocol?: bigint } = {},
): Promise<{ offered: bigint; offeredProtocol: bigint }> {
  fe.send(FrontendRequest.SET_OWNER);
  const offered = await fe.getU64(FrontendRequest.GET_FEATURES);
  const offeredProtocol = await fe.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
  const protocol = options.protocol ?? TEST_PROTOCOL;
  fe.setU64(FrontendRequest.SET_PROTOCOL_FEATURES, protocol & offeredProtocol);
  const features = options.features ?? offered;
  expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(features))).toBe(0n);
  return { offered, offeredProtocol };
}

export function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

/** The standard one-region table over `mem`: GPA 0, front-end VA TEST_UVA. */
export function standardRegion(mem: TestMemory) {
  return { guestPhysAddr: TEST_GPA, memorySize: BigInt(mem.size), userspaceAddr: TEST_UVA, mmapOffset: 0n };
}

/** Sends the standard memory table and expects the REPLY_ACK ack 0. */
export async function sendMemTable(fe: ScriptedFrontend, mem: TestMemory): Promise<void> {
  const fd = mem.dupFd();
  fe.setMemTable([standardRegion(mem)], [fd], true);
  native.close(fd);
  const reply = await fe.recv();
  expect(reply.header.request).toBe(FrontendRequest.SET_MEM_TABLE);
  expect(new DataView(reply.payload.buffer).getBigUint64(0, true)).toBe(0n);
}

/** Eventfds the test keeps for one ring (the back-end gets dups). */
export interface RingFds {
  kick: number;
  call: number;
}

/** Configures ring `i`: NUM, BASE, ADDR, KICK, CALL (no ENABLE). Returns the test's eventfds. */
export async function configureRing(fe: ScriptedFrontend, i: number, options: { size?: number; base?: number; enable?: boolean } = {}): Promise<RingFds> {
  const size = options.size ?? 256;
  const l = ringLayout(i, size);
  fe.vringState(FrontendRequest.SET_VRING_NUM, i, size);
  fe.vringState(FrontendRequest.SET_VRING_BASE, i, options.base ?? 0);
  fe.vringAddr(i, l);
  const kick = eventfd();
  const call = eventfd();
  sendFd(fe, FrontendRequest.SET_VRING_KICK, i, kick);
  sendFd(fe, FrontendRequest.SET_VRING_CALL, i, call);
  if (options.enable === true) fe.vringState(FrontendRequest.SET_VRING_ENABLE, i, 1);
  await barrier(fe);
  return { kick, call };
}

/** Sends a dup of `fd` with a vring fd message and closes the dup. */
export function sendFd(fe: ScriptedFrontend, request: FrontendRequest.SET_VRING_KICK | FrontendRequest.SET_VRING_CALL | FrontendRequest.SET_VRING_ERR, i: number, fd: number, needReply = false): void {
  const dup = native.dup(fd);
  fe.vringFd(request, i, dup, needReply);
  native.close(dup);
}

/**
 * A round trip that proves every earlier message was processed, including the
 * readiness pass after it (messages are handled strictly in order).
 */
export async function barrier(fe: ScriptedFrontend): Promise<void> {
  await fe.getU64(FrontendRequest.GET_FEATURES);
}

/** Closes the test's ring eventfds. */
export function closeRingFds(rings: readonly RingFds[]): void {
  for (const r of rings) {
    native.close(r.kick);
    native.close(r.call);
  }
}

export const STATUS_DRIVER_OK = 0xf;
export { bit, TEST_UVA };
