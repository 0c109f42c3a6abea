/**
 * Counters kept in a Float64Array (`stat`) behind named accessors. Data-path
 * counters live in float64 slots, not number fields: a field that outgrows V8's
 * small integers (2^30: seconds to minutes at line rate) changes representation
 * mid-run and deoptimises every function that touched the object; a float64
 * slot holds exact integers up to 2^53. Hot paths index `stat` directly; the
 * names are for everyone else.
 */
export function defineStatAccessors(cls: { prototype: { stat: Float64Array } }, slots: Readonly<Record<string, number>>): void {
  for (const [name, slot] of Object.entries(slots)) {
    Object.defineProperty(cls.prototype, name, {
      get(this: { stat: Float64Array }): number {
        return this.stat[slot]!;
      },
      set(this: { stat: Float64Array }, v: number) {
        this.stat[slot] = v;
      },
      enumerable: true,
      configurable: false,
    });
  }
}
