/**
 * Periodic statistics for the daemons: one progress-style line rewritten in
 * place when attached to a terminal, one JSON object per line otherwise.
 *
 * The caller supplies cumulative counters per queue (or per any row name);
 * the view turns counters declared as `rate` into per-second rates between
 * samples, shows `gauge` values as they are and `total` values as totals.
 */

/** How one metric is shown. */
export interface MetricSpec {
  /** Counter name in the sampled rows. */
  key: string;
  /** Short label on the terminal line and the JSON key (e.g. 'pps'). */
  label: string;
  /** rate: per-second delta of a cumulative counter; gauge: current value; total: cumulative value. */
  kind: 'rate' | 'gauge' | 'total';
  /** Scaling for the terminal: plain count, bytes (shown as bit/s for rates when `bits`), or none. */
  unit?: 'count' | 'bits' | 'bytes';
}

/** Cumulative counters keyed by row name (e.g. queue index) then counter key. */
export type Sample = Record<string, Record<string, number>>;

export interface LiveViewOptions {
  metrics: readonly MetricSpec[];
  /** Returns the current cumulative counters; called every interval. */
  sample: () => Sample | Promise<Sample>;
  intervalMs: number;
  /** Where lines go (default process.stdout). */
  out?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Force JSON lines (true) or the terminal line (false); default: JSON unless `out` is a TTY. */
  json?: boolean;
  /** Extra fields put on every JSON line (e.g. { device: 'net0' }). */
  tags?: Record<string, string>;
}

/** Formats a number with an SI prefix: 1234567 -> '1.23M'. */
export function si(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1e9) return (n / 1e9).toFixed(2) + 'G';
  if (abs >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (abs >= 1e3) return (n / 1e3).toFixed(2) + 'k';
  return abs >= 100 || Number.isInteger(n) ? n.toFixed(0) : n.toFixed(2);
}

/** Computes one frame of values (rates per second) from two samples `dtMs` apart. */
export function computeFrame(
  metrics: readonly MetricSpec[],
  prev: Sample | undefined,
  cur: Sample,
  dtMs: number,
): Record<string, Record<string, number>> {
  const frame: Record<string, Record<string, number>> = {};
  for (const [row, counters] of Object.entries(cur)) {
    const out: Record<string, number> = {};
    for (const m of metrics) {
      const v = counters[m.key] ?? 0;
      if (m.kind === 'rate') {
        const before = prev?.[row]?.[m.key] ?? 0;
        const delta = Math.max(0, v - before);
        out[m.label] = dtMs > 0 ? (delta * 1000) / dtMs : 0;
      } else {
        out[m.label] = v;
      }
    }
    frame[row] = out;
  }
  return frame;
}

/** Renders a frame as one terminal line. */
export function formatLine(metrics: readonly MetricSpec[], frame: Record<string, Record<string, number>>): string {
  const parts: string[] = [];
  for (const [row, values] of Object.entries(frame)) {
    const cells = metrics.map((m) => {
      const v = values[m.label] ?? 0;
      if (m.unit === 'bits') return `${si(v * 8)}bit${m.kind === 'rate' ? '/s' : ''}`;
      if (m.unit === 'bytes') return `${si(v)}B${m.kind === 'rate' ? '/s' : ''}`;
      return `${si(v)} ${m.label}`;
    });
    parts.push(`${row}: ${cells.join(' ')}`);
  }
  return parts.join(' | ');
}

/** The periodic printer. `stop()` prints a final newline on a terminal. */
export class LiveView {
  private timer: NodeJS.Timeout | undefined;
  private prev: Sample | undefined;
  private prevAt = 0;
  private readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  private readonly json: boolean;
  private lastWidth = 0;
  private sampling = false;

  constructor(private readonly opts: LiveViewOptions) {
    if (!(opts.intervalMs > 0)) throw new RangeError(`stats interval must be > 0 ms, got ${opts.intervalMs}`);
    this.out = opts.out ?? process.stdout;
    this.json = opts.json ?? this.out.isTTY !== true;
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.prevAt = Date.now();
    void this.takeBaseline();
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  private async takeBaseline(): Promise<void> {
    try {
      this.prev = await this.opts.sample();
    } catch {
      this.prev = undefined;
    }
  }

  /** Samples once and prints; exposed for tests. */
  async tick(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const now = Date.now();
      const cur = await this.opts.sample();
      const frame = computeFrame(this.opts.metrics, this.prev, cur, now - this.prevAt);
      this.prev = cur;
      this.prevAt = now;
      if (this.json) {
        this.out.write(JSON.stringify({ ts: new Date(now).toISOString(), ...this.opts.tags, queues: roundFrame(frame) }) + '\n');
      } else {
        const line = formatLine(this.opts.metrics, frame);
        const pad = this.lastWidth > line.length ? ' '.repeat(this.lastWidth - line.length) : '';
        this.lastWidth = line.length;
        this.out.write('\r' + line + pad);
      }
    } catch (err) {
      this.out.write(`${this.json ? '' : '\n'}stats unavailable: ${(err as Error).message}\n`);
    } finally {
      this.sampling = false;
    }
  }

  stop(): void {
    if (this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    if (!this.json && this.lastWidth > 0) this.out.write('\n');
  }
}

function roundFrame(frame: Record<string, Record<string, number>>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [row, values] of Object.entries(frame)) {
    const r: Record<string, number> = {};
    for (const [k, v] of Object.entries(values)) r[k] = Math.round(v * 100) / 100;
    out[row] = r;
  }
  return out;
}
