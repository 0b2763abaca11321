/** A PEFT adapter's expert stacks (target_parameters), as inspect lists them. */
import { openPeftAdapter } from '../lora/adapter.js';
import type { InspectExperts } from './inspect.js';

export async function expertModules(dir: string): Promise<InspectExperts[]> {
  const adapter = await openPeftAdapter(dir);
  try {
    return adapter.modules.flatMap((m) =>
      m.experts
        ? [{ parameter: m.experts.parameter, module: m.name, count: m.experts.count, rank: m.experts.rank, alpha: m.alpha, scaling: m.scaling, outFeatures: m.outFeatures, inFeatures: m.inFeatures }]
        : [],
    );
  } finally {
    await adapter.close();
  }
}
