/**
 * The error every codec check throws: a message that breaks the wire format or
 * a per-request rule. The control plane catches it at the connection boundary
 * and answers a REPLY_ACK failure or closes the connection with `message` in
 * the log line; it never escapes as a crash.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  /** The request code of the offending message, when known. */
  readonly request: number | undefined;
  constructor(message: string, request?: number) {
    super(message);
    this.request = request;
  }
}
