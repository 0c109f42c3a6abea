/**
 * Pluggable logging. Every line the control plane writes goes through a
 * {@link Logger}; the default writes to stderr with a `[vhost-ts]` prefix.
 */

/** Severity of a log line. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Where log lines go. Implement all four (a no-op is fine). */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const LEVEL_ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * The default logger: `[vhost-ts] <level> <message>` on stderr, lines below
 * `minLevel` dropped. `VHOST_TS_LOG=debug|info|warn|error` overrides the
 * default level (`info`).
 */
export function stderrLogger(minLevel: LogLevel = defaultLevel()): Logger {
  const min = LEVEL_ORDER[minLevel];
  const write = (level: LogLevel) => (message: string) => {
    if (LEVEL_ORDER[level] >= min) process.stderr.write(`[vhost-ts] ${level} ${message}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

function defaultLevel(): LogLevel {
  const env = process.env.VHOST_TS_LOG;
  return env === 'debug' || env === 'info' || env === 'warn' || env === 'error' ? env : 'info';
}

/** A logger that drops everything. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A logger that prefixes every line (e.g. with `conn#3 /run/vhost.sock:`). */
export function prefixedLogger(logger: Logger, prefix: string): Logger {
  return {
    debug: (m) => logger.debug(`${prefix} ${m}`),
    info: (m) => logger.info(`${prefix} ${m}`),
    warn: (m) => logger.warn(`${prefix} ${m}`),
    error: (m) => logger.error(`${prefix} ${m}`),
  };
}
