/**
 * Merge parameters as mergekit understands them (mergekit/config.py, `evaluate_setting` and
 * `ConfigReader.parameter`):
 *
 * - a scalar: `weight: 0.5`, `normalize: true`;
 * - a gradient: `t: [0, 0.5, 1]` — the value at position t ∈ [0, 1] (a layer's place in its slice)
 *   interpolates linearly between neighbouring entries (lists of booleans pick an entry instead);
 * - a filter list: `[{filter: self_attn, value: 0.5}, {value: 1}]` — the first entry whose filter
 *   is a substring of the tensor name (or has no filter, or filter "*") gives the value, which may
 *   itself be a gradient. When no entry matches, the next level down is consulted.
 *
 * Levels, most specific first: the model's own parameters (per-model parameters only), the slice's,
 * then the merge-wide ones; then the method's default.
 */

export type Scalar = number | boolean;

export interface ConditionalParameter {
  /** substring of the tensor name; absent or "*" matches every tensor */
  filter?: string;
  value: Scalar | Scalar[];
}

export type ParameterSetting = Scalar | Scalar[] | ConditionalParameter[];

export type ParameterMap = Readonly<Record<string, ParameterSetting>>;

function isConditionalList(setting: Scalar[] | ConditionalParameter[]): setting is ConditionalParameter[] {
  return setting.length > 0 && typeof setting[0] === 'object';
}

/** A gradient at position t: numbers interpolate linearly, booleans pick the entry at ⌊t·(n−1)⌋. */
function evaluateGradient(values: readonly Scalar[], t: number): Scalar {
  const scaled = t * (values.length - 1);
  if (values.every((v): v is number => typeof v === 'number')) {
    // the same arithmetic as mergekit (Python floats are IEEE doubles too), so values agree exactly
    const i0 = Math.trunc(scaled);
    const i1 = Math.min(values.length - 1, i0 + 1);
    const frac = scaled - i0;
    return (1 - frac) * values[i0] + frac * values[i1];
  }
  return values[Math.trunc(scaled)];
}

/**
 * The value of one setting for a tensor at gradient position `t`, or undefined when it is a filter
 * list none of whose filters match `tensorName`.
 */
export function evaluateSetting(setting: ParameterSetting, tensorName: string, t: number): Scalar | undefined {
  if (!Array.isArray(setting)) return setting;
  if (!isConditionalList(setting)) return evaluateGradient(setting, t);
  for (const cond of setting) {
    if (cond.filter === undefined || cond.filter === '*' || tensorName.includes(cond.filter)) {
      return Array.isArray(cond.value) ? evaluateGradient(cond.value, t) : cond.value;
    }
  }
  return undefined;
}

/**
 * Looks `name` up through `levels` (most specific first; missing levels are skipped) and returns
 * the first value that applies to `tensorName` at position `t`, or undefined.
 */
export function resolveParameter(name: string, levels: ReadonlyArray<ParameterMap | undefined>, tensorName: string, t: number): Scalar | undefined {
  for (const level of levels) {
    if (!level || !Object.hasOwn(level, name)) continue;
    const value = evaluateSetting(level[name], tensorName, t);
    if (value !== undefined) return value;
  }
  return undefined;
}
