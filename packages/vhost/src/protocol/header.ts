/**
 * The 12-byte message header: request u32 @0, flags u32 @4, size u32 @8.
 */
import { checkUint, getU32, setU32, viewOf } from './bytes.js';
import {
  FLAG_KNOWN_MASK,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  HEADER_FLAGS_OFFSET,
  HEADER_REQUEST_OFFSET,
  HEADER_SIZE,
  HEADER_SIZE_OFFSET,
  MAX_PAYLOAD_SIZE,
  PROTOCOL_VERSION,
} from './constants.js';
import { ProtocolError } from './errors.js';

/** A decoded header. */
export interface MessageHeader {
  /** Request code (a {@link FrontendRequest} or {@link BackendRequest} depending on the channel). */
  request: number;
  /** Raw flags word (version, REPLY, NEED_REPLY). */
  flags: number;
  /** Payload size in bytes that follows the header. */
  size: number;
}

/** Reads a header from the first 12 bytes of `bytes` (no validation; see {@link validateHeader}). */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.byteLength < HEADER_SIZE) throw new ProtocolError(`header needs ${HEADER_SIZE} bytes, got ${bytes.byteLength}`);
  const v = viewOf(bytes);
  return {
    request: getU32(v, HEADER_REQUEST_OFFSET),
    flags: getU32(v, HEADER_FLAGS_OFFSET),
    size: getU32(v, HEADER_SIZE_OFFSET),
  };
}

/** Writes `header` into `into` at `offset` (default: a new 12-byte array). */
export function encodeHeader(header: MessageHeader, into?: Uint8Array, offset = 0): Uint8Array {
  const out = into ?? new Uint8Array(HEADER_SIZE);
  checkUint(header.request, 32, 'request');
  checkUint(header.flags, 32, 'flags');
  checkUint(header.size, 32, 'size');
  const v = new DataView(out.buffer, out.byteOffset + offset, HEADER_SIZE);
  setU32(v, HEADER_REQUEST_OFFSET, header.request);
  setU32(v, HEADER_FLAGS_OFFSET, header.flags);
  setU32(v, HEADER_SIZE_OFFSET, header.size);
  return out;
}

/** The version field of a flags word. */
export function headerVersion(flags: number): number {
  return flags & FLAG_VERSION_MASK;
}
/** True when the REPLY bit is set. */
export function isReply(flags: number): boolean {
  return (flags & FLAG_REPLY) !== 0;
}
/** True when the NEED_REPLY bit is set. */
export function needsReply(flags: number): boolean {
  return (flags & FLAG_NEED_REPLY) !== 0;
}

/**
 * Checks what every message must satisfy whatever its request: version 1, no
 * undefined flag bits, size within {@link MAX_PAYLOAD_SIZE}. `expectReply`
 * says which side we are: a request must not carry REPLY, a reply must.
 * Throws {@link ProtocolError}.
 */
export function validateHeader(header: MessageHeader, expectReply: boolean): void {
  const version = headerVersion(header.flags);
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(`bad protocol version ${version} (flags 0x${header.flags.toString(16)}), expected ${PROTOCOL_VERSION}`, header.request);
  }
  if ((header.flags & ~FLAG_KNOWN_MASK) !== 0) {
    throw new ProtocolError(`undefined flag bits set (flags 0x${header.flags.toString(16)})`, header.request);
  }
  if (isReply(header.flags) !== expectReply) {
    throw new ProtocolError(
      expectReply ? 'expected a reply but the REPLY flag is clear' : 'REPLY flag set on a request',
      header.request,
    );
  }
  if (header.size > MAX_PAYLOAD_SIZE) {
    throw new ProtocolError(`payload size ${header.size} exceeds the maximum ${MAX_PAYLOAD_SIZE}`, header.request);
  }
}

/** Flags word for a request: version 1, NEED_REPLY when asked. */
export function requestFlags(needReply = false): number {
  return PROTOCOL_VERSION | (needReply ? FLAG_NEED_REPLY : 0);
}
/** Flags word for a reply: version 1 | REPLY (0x5). */
export const REPLY_FLAGS = PROTOCOL_VERSION | FLAG_REPLY;

/** Header + payload in one buffer, ready for sendmsg. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  encodeHeader({ request, flags, size: payload.byteLength }, out, 0);
  out.set(payload, HEADER_SIZE);
  return out;
}
