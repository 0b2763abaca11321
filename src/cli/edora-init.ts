import type { Command } from 'commander';
import { DEFAULT_EDORA_POWER_ITERS, DEFAULT_EDORA_SIGMA, edoraInit, type EdoraInitReport } from '../edora-init/edora-init.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import { addOutputFlags, dtypeOption, helpStyle, hubOptions, HUB_IDS_HELP } from './options.js';
import { checkOutFlag, printReport } from './output.js';
import { lazyProgress } from './progress.js';
import { UsageError, parseFloatFlag, parseIntFlag } from './errors.js';
import { formatRange, tensorTable } from './format.js';

interface EdoraInitFlags {
  offline?: boolean;
  base: string;
  rank: string;
  targetModules: string;
  out: string;
  alpha?: string;
  sigma?: string;
  powerIters?: string;
  seed?: string;
  dtype?: FloatDType;
  threads?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

type Module = EdoraInitReport['modules'][number];

const shapeOf = (m: Module) => `${m.shape[0]}×${m.shape[1]}`;

function summaryLines(r: EdoraInitReport): string[] {
  const energy = (x: number) => x.toFixed(4);
  const rows = tensorTable(r.modules, {
    typeOf: (m) => m.name.slice(m.name.lastIndexOf('.') + 1),
    perTensor: { header: ['module', 'shape', 'energy kept by B·A'], row: (m) => [m.name, shapeOf(m), energy(m.energy)] },
    grouped: {
      header: ['module', 'modules', 'shape', 'energy kept by B·A'],
      row: (type, ms) => [type, String(ms.length), [...new Set(ms.map(shapeOf))].join(', '), formatRange(ms.map((m) => m.energy), energy)],
    },
  });
  return [
    `initialised ${r.modules.length} EDoRA module(s), rank ${r.rank}, alpha ${r.alpha}, R ~ N(0, ${r.sigma}²), seed ${r.seed} → ${r.out} in ${r.seconds.toFixed(1)} s`,
    '',
    rows,
    '',
    'files: adapter_config.json, adapter_model.safetensors, reconstr_config.json',
  ];
}

export function registerEdoraInit(program: Command): void {
  const command = helpStyle(program.command('edora-init'))
    .description(
      'Initialise an EDoRA adapter from a base model: A and B from a seeded randomized SVD of each target weight (frozen in EDoRA), ' +
        'a small random latent R, the DoRA magnitude = row norms of W, plus reconstr_config.json, in the layout the EDoRA reference code loads.',
    )
    .requiredOption('--base <path>', 'base model folder (or .safetensors file)')
    .requiredOption('--rank <r>', 'rank r of A (r × in), B (out × r) and R (r × r)')
    .requiredOption('--target-modules <list>', 'comma-separated module names or name endings, as PEFT target_modules (e.g. q_proj,v_proj)')
    .requiredOption('--out <dir>', 'output adapter folder (written atomically)')
    .option('--alpha <a>', 'lora_alpha (default: the rank, so the scaling alpha/r is 1)')
    .option('--sigma <s>', `standard deviation of R's initial entries, as the reference (default: ${DEFAULT_EDORA_SIGMA})`)
    .option('--power-iters <n>', `power iterations of the randomized SVD (default: ${DEFAULT_EDORA_POWER_ITERS})`)
    .option('--seed <n>', 'seed of the SVD and of R (default: 0)')
    .addOption(dtypeOption('storage dtype of A and B (R and the magnitude stay f32)', 'f32'));
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
For each target weight W (out × in) with top-r SVD U·Σ·Vᵀ: lora_B = U_r, lora_A = Σ_r·V_rᵀ (so B·A is
the best rank-r approximation of W), <module>_lora_latent_mapping.weight = R ~ N(0, σ²) (r × r), and
lora_magnitude_vector = the row norms of W. adapter_config.json has use_dora: true. The reference's
merge script (utils/merge_adapter_to_base_model.py) reads reconstr_config.json from the folder ABOVE
the adapter; loraforge reads it from either place.

Examples:
  loraforge edora-init --base ./Llama-3.2-1B --rank 16 --target-modules q_proj,k_proj,v_proj,o_proj --out ./edora-init
  loraforge edora-init --base ./Qwen2.5-7B --rank 32 --target-modules q_proj,v_proj --out ./edora --seed 42 --json
${HUB_IDS_HELP}`,
    )
    .action(async (flags: EdoraInitFlags) => {
      const rank = parseIntFlag('--rank', flags.rank, 1);
      const targetModules = flags.targetModules.split(',').map((t) => t.trim()).filter((t) => t !== '');
      if (targetModules.length === 0) throw new UsageError('--target-modules needs at least one module name, e.g. q_proj,v_proj');
      const threads = parseIntFlag('--threads', flags.threads, 1);
      await checkOutFlag(flags.out, [flags.base], flags.force === true);
      const progress = lazyProgress('edora-init', Boolean(flags.quiet || flags.json));
      const report = await edoraInit({
        hub: hubOptions(flags),
        base: flags.base,
        rank,
        targetModules,
        out: flags.out,
        alpha: parseFloatFlag('--alpha', flags.alpha),
        sigma: parseFloatFlag('--sigma', flags.sigma, [0, Infinity]),
        powerIters: parseIntFlag('--power-iters', flags.powerIters, 0),
        seed: parseIntFlag('--seed', flags.seed, 0),
        dtype: flags.dtype,
        overwrite: flags.force ?? false,
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
