/**
 * Errors the control plane raises while handling a front-end request.
 */

/**
 * A request the back-end refuses (bad value, wrong state, unsupported). The
 * state machine answers a REPLY_ACK failure when the front-end set
 * NEED_REPLY, and otherwise closes the connection, logging `message`.
 */
export class VhostRequestError extends Error {
  override readonly name = 'VhostRequestError';
}

/** A driver callback did not settle within the callback timeout. */
export class CallbackTimeoutError extends Error {
  override readonly name = 'CallbackTimeoutError';
}

/** Throws a {@link VhostRequestError} when `condition` is false. */
export function check(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition) throw new VhostRequestError(typeof message === 'string' ? message : message());
}
