/** Names of modules inside a model: their layer, their type, and the order people read them in. */

/** The decoder layer a module belongs to, from the `layers.N.` part of its path; null outside the layer stack. */
export function layerIndexOf(path: string): number | null {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(path);
  return m ? Number(m[1]) : null;
}

/**
 * `model.layers.3.self_attn.q_proj(.weight)` → `q_proj`: the name PEFT's target_modules use. An
 * expert of a MoE stack, `model.layers.3.mlp.experts.gate_up_proj[5]`, is of its parameter's type
 * (`gate_up_proj`).
 */
export function moduleTypeOf(path: string): string {
  const noExpert = path.replace(/\[\d+\]$/, '');
  const base = noExpert.endsWith('.weight') ? noExpert.slice(0, -'.weight'.length) : noExpert;
  return base.slice(base.lastIndexOf('.') + 1);
}

/**
 * Orders module paths the way people read them: digit runs compare as numbers, so layers.2 comes
 * before layers.10. This order, not the file's, fixes the random draws of `--perturb`.
 */
export function naturalCompare(a: string, b: string): number {
  const ta = a.split(/(\d+)/);
  const tb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    if (ta[i] === tb[i]) continue;
    // odd positions of split() with a capture group are the digit runs
    if (i % 2 === 1) {
      const d = Number(ta[i]) - Number(tb[i]);
      if (d !== 0) return d;
    }
    return ta[i] < tb[i] ? -1 : 1;
  }
  return ta.length - tb.length;
}
