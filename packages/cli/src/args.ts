/**
 * Command-line parsing for `vhost-ts`, following the vhost-user spec's back-end
 * program conventions (`--socket-path=PATH`, `--fd=N`, `--print-capabilities`).
 * Long options only, as `--name=value`, `--name value` or a bare `--flag`.
 */

/** Thrown for any bad command line; the CLI prints the message and exits with status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** How one option is read. */
export interface OptionSpec {
  /** 'flag' takes no value; 'string'/'int' take one; 'list' may repeat. */
  kind: 'flag' | 'string' | 'int' | 'list';
  /** One line for --help. */
  help: string;
  /** Smallest accepted value for 'int'. */
  min?: number;
  /** Largest accepted value for 'int'. */
  max?: number;
}

export type OptionSpecs = Record<string, OptionSpec>;

/** Parsed values: flags are booleans, ints numbers, lists string arrays. */
export type ParsedOptions = Record<string, string | number | boolean | string[]>;

/** Parses `argv` against `specs`; unknown options, missing values and bad numbers are UsageErrors. */
export function parseOptions(argv: readonly string[], specs: OptionSpecs): ParsedOptions {
  const out: ParsedOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--') || arg === '--') throw new UsageError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const spec = specs[name];
    if (spec === undefined) throw new UsageError(`unknown option '--${name}'`);
    if (spec.kind === 'flag') {
      if (eq >= 0) throw new UsageError(`option '--${name}' takes no value`);
      out[name] = true;
      continue;
    }
    let value: string;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`option '--${name}' needs a value`);
      value = next;
      i++;
    }
    if (spec.kind === 'int') {
      if (!/^\d+$/.test(value)) throw new UsageError(`option '--${name}' needs a whole number, got '${value}'`);
      const n = Number(value);
      if (spec.min !== undefined && n < spec.min) throw new UsageError(`option '--${name}' must be at least ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) throw new UsageError(`option '--${name}' must be at most ${spec.max}, got ${n}`);
      out[name] = n;
    } else if (spec.kind === 'list') {
      const prev = out[name];
      out[name] = Array.isArray(prev) ? [...prev, value] : [value];
    } else {
      if (value.length === 0) throw new UsageError(`option '--${name}' needs a non-empty value`);
      out[name] = value;
    }
  }
  return out;
}

/** Parses a CPU list such as `0,2-3` into [0, 2, 3]. */
export function parseCpuList(text: string): number[] {
  const cpus: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (m === null) throw new UsageError(`bad CPU list '${text}' (expected e.g. 0,2-3)`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new UsageError(`bad CPU range '${part}' in '${text}'`);
    for (let c = lo; c <= hi; c++) cpus.push(c);
  }
  return cpus;
}

/** Parses repeated `k=v` pairs (`--module-opt ip=10.0.0.1`) into a record. */
export function parseKeyValues(items: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`expected key=value, got '${item}'`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** Renders the option table for --help. */
export function formatHelp(usage: string, specs: OptionSpecs): string {
  const lines = [usage, '', 'options:'];
  for (const [name, spec] of Object.entries(specs)) {
    const arg = spec.kind === 'flag' ? '' : spec.kind === 'int' ? '=N' : '=VALUE';
    lines.push(`  --${(name + arg).padEnd(26)} ${spec.help}`);
  }
  return lines.join('\n');
}
