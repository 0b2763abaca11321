import { Option, type Command } from 'commander';
import type { FloatDType } from '../io/types.js';
import { ADAPTER_FORMATS, type AdapterFormat } from '../lora/sink.js';
import { LORA_FILE_OUT_FORMATS, type LoraFileOutFormat } from '../lora/lora-file-output.js';
import {
  MAJORITY_SIGNS,
  MERGE_METHODS,
  METHOD_NAMES,
  checkMethodOptions,
  mergeAdapters,
  mergeReportPath,
  type MajoritySign,
  type MergeReport,
  type MethodName,
} from '../merge-adapters/index.js';
import { UsageError, parseFloatFlag, parseIntFlag } from './errors.js';
import { table } from './format.js';
import { addOutputFlags, collect, dtypeOption, helpStyle, parseAdapterFlag, readBaseConfig, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag, printReport } from './output.js';

interface MergeAdaptersFlags {
  offline?: boolean;
  adapter: string[];
  method: MethodName;
  out: string;
  density?: string;
  majoritySign?: MajoritySign;
  gamma?: string;
  epsilon?: string;
  svdRank?: string;
  svdClamp?: string;
  seed?: string;
  exact?: boolean;
  format?: AdapterFormat;
  outFormat?: LoraFileOutFormat;
  dtype?: FloatDType;
  baseConfig?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function formatError(e: number | null): string {
  if (e === null) return '-';
  return e < 1e-3 ? e.toExponential(1) : e.toFixed(4);
}

/** Modules grouped by their path with layer numbers starred (`model.layers.*.self_attn.q_proj`). */
function summaryTable(report: MergeReport): string {
  const groups = new Map<string, MergeReport['modules']>();
  for (const m of report.modules) {
    const key = m.name.replace(/\.\d+(?=\.|$)/g, '.*');
    groups.set(key, [...(groups.get(key) ?? []), m]);
  }
  const distinct = (xs: Array<string | number>) => [...new Set(xs)].join('/');
  const rows = [['module', 'count', 'input ranks', 'output rank', 'rel. error (max)', 'rel. error (mean)']];
  for (const [key, ms] of groups) {
    const errors = ms.map((m) => m.relError).filter((e): e is number => e !== null);
    rows.push([
      key,
      String(ms.length),
      distinct(ms.map((m) => m.inputRanks.map((r) => r ?? '-').join(','))),
      distinct(ms.map((m) => (m.omitted ? 'omitted' : m.outputRank))),
      formatError(errors.length ? Math.max(...errors) : null),
      formatError(errors.length ? errors.reduce((a, b) => a + b, 0) / errors.length : null),
    ]);
  }
  return table(rows);
}

function summaryLines(report: MergeReport): string[] {
  const how = report.semantics === 'exact' ? 'exact deltas' : 'PEFT semantics';
  const method = report.resolvedMethod === report.method ? report.method : `${report.method} → ${report.resolvedMethod}`;
  const lines = [
    `merged ${report.adapters.length} adapter(s) with ${method} (${how}) into ${report.out} (${report.format}) in ${report.seconds.toFixed(1)} s`,
    ...report.adapters.map((a, i) => `  [${i + 1}] ${a.path}  weight ${a.weight}  r=${a.ranks.join('/')}  ${a.modules} modules`),
    '',
    summaryTable(report),
    '',
    `relative error = ‖merged − Σ w_i·s_i·B_i·A_i‖_F / ‖Σ w_i·s_i·B_i·A_i‖_F per module; max ${formatError(report.maxRelError)}`,
  ];
  if (report.carriedTensors.length) lines.push(`copied full tensors (modules_to_save): ${report.carriedTensors.join(', ')}`);
  for (const note of report.notes) lines.push(`note: ${note}`);
  lines.push(`report: ${mergeReportPath(report.out)}`);
  return lines;
}

const METHOD_HELP = METHOD_NAMES.map((n) => `  ${n.padEnd(20)} ${MERGE_METHODS[n].summary}`).join('\n');

export function registerMergeAdapters(program: Command): void {
  const command = helpStyle(program.command('merge-adapters'))
    .description(
      'Merge LoRA adapters into one with PEFT add_weighted_adapter semantics (default) or exactly (--exact). Writes the new adapter ' +
        '(r = lora_alpha, scaling 1) and report.json with each module\'s relative error against the exact weighted sum Σ w_i·s_i·B_i·A_i.',
    )
    .requiredOption('--adapter <path[:weight]>', 'a PEFT adapter folder, or a kohya/diffusers LoRA .safetensors file, and its weight (1 if left out); repeat for each adapter', collect)
    .addOption(new Option('--method <name>', 'merge method (see below)').choices(METHOD_NAMES).makeOptionMandatory())
    .requiredOption('--out <path>', 'output folder (created atomically); for LoRA-file inputs, a .safetensors file in their layout')
    .option('--density <d>', 'fraction of entries kept by ties / dare_* / magnitude_prune / breadcrumbs* / della* (default: 0.5)')
    .addOption(new Option('--majority-sign <how>', 'TIES sign election (ties*, dare_ties*, breadcrumbs_ties_svd, della_svd): sign of the sum or of the sign count').choices(MAJORITY_SIGNS).default(undefined, 'total'))
    .option('--gamma <g>', 'breadcrumbs*: fraction of largest-magnitude entries dropped as outliers (default: 0.01)')
    .option('--epsilon <e>', "della*: keep probabilities run from density − epsilon to density + epsilon by magnitude rank in each row (default: 0.15)")
    .option('--svd-rank <n>', 'output rank of the SVD merges (default: the largest input rank; linear --exact: lossless)')
    .option('--svd-clamp <q>', 'clamp the SVD factors at this quantile of their entries, as PEFT svd_clamp')
    .option('--seed <n>', 'seed of the DARE masks and della draws (default: 0)')
    .option('--exact', 'merge the true deltas w_i·s_i·B_i·A_i and re-factorise: no cross terms, no double scaling')
    .addOption(new Option('--format <f>', 'output format of PEFT-folder inputs').choices(ADAPTER_FORMATS).default(undefined, 'peft'))
    .addOption(
      new Option('--out-format <f>', 'layout written from kohya/diffusers LoRA files (peft: a folder; diffusers-named inputs of one component only)')
        .choices(LORA_FILE_OUT_FORMATS)
        .default(undefined, "the inputs' layout"),
    )
    .addOption(dtypeOption('storage dtype of the new factors', 'f32'))
    .option('--base-config <path>', "the base model's config.json (or its folder); needed for --format gguf|both");
  addOutputFlags(command, { threads: false, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Methods (PEFT's names and formulas):
${METHOD_HELP}

  linear, ties, dare_linear, dare_ties and magnitude_prune merge lora_A and lora_B separately, as PEFT
  does: the result B'·A' carries cross terms B_j·A_i and is not the weighted sum of the adapters (often
  100% off). The *_svd methods reproduce PEFT 5d602fd, which applies each adapter's scaling twice.
  --exact merges the true deltas instead (for *_svd: what PEFT does after PR #3111) and re-factorises
  with an SVD; svd and linear --exact never form the out×in delta. With one adapter every method is
  linear, as in PEFT. DoRA adapters cannot be merged yet. breadcrumbs*_svd and della*_svd (not in PEFT
  or mergekit) sparsify each scaled delta with mergekit's breadcrumbs / della, where ties_svd prunes.

Image-model LoRA files (kohya's lora_unet_…/lora_te…_ keys, or diffusers' unet./transformer./text_encoder….
keys; SD 1.5, SDXL, Flux) merge into one .safetensors file in the same layout, or the one --out-format
names: diffusers → kohya renames mechanically (unet. → lora_unet_, text_encoder. → lora_te_/lora_te1_);
kohya → diffusers or peft is refused (kohya's "_"-joined names have no exact module path); peft writes
a PEFT folder for one component's modules (module paths without the unet./text_encoder. prefix,
target_modules the full paths, task_type null). Each module's scale
alpha/r is applied once (the *_svd methods weight (alpha/r)·up·down by w_i, with no PEFT double scaling);
conv LoRAs merge as their flattened out × (in·kh·kw) deltas and are written back 4-D.

Examples:
  loraforge merge-adapters --adapter ./math:0.7 --adapter ./code:0.3 --method cat --out ./merged
  loraforge merge-adapters --adapter ./a --adapter ./b:-0.5 --method svd --exact --svd-rank 32 --out ./merged
  loraforge merge-adapters --adapter ./a --adapter ./b --method ties_svd --density 0.3 --out ./merged --json
  loraforge merge-adapters --adapter ./a --adapter ./b --method della_svd --density 0.4 --epsilon 0.1 --seed 7 --out ./merged
  loraforge merge-adapters --adapter style.safetensors:0.8 --adapter pixel.safetensors:0.5 --method svd --svd-rank 32 --out merged.safetensors
${HUB_IDS_HELP}`,
    )
    .action(async (flags: MergeAdaptersFlags) => {
      const adapters = flags.adapter.map((spec) => {
        const { dir, weight } = parseAdapterFlag(spec);
        return { path: dir, weight: weight ?? 1 };
      });
      const method = MERGE_METHODS[flags.method];
      const options = {
        density: parseFloatFlag('--density', flags.density, [0, 1]),
        majoritySign: flags.majoritySign,
        gamma: parseFloatFlag('--gamma', flags.gamma, [0, 1]),
        epsilon: parseFloatFlag('--epsilon', flags.epsilon, [0, 1]),
        svdRank: parseIntFlag('--svd-rank', flags.svdRank, 1),
        svdClamp: parseFloatFlag('--svd-clamp', flags.svdClamp, [0, 1]),
        seed: parseIntFlag('--seed', flags.seed, 0),
        exact: flags.exact ?? false,
      };
      const problem = checkMethodOptions(method, options);
      if (problem) throw new UsageError(problem);
      if (flags.format !== undefined && flags.format !== 'peft' && !flags.baseConfig) {
        throw new UsageError(`--format ${flags.format} writes GGUF, which needs the base model's config: pass --base-config`);
      }
      await checkOutFlag(flags.out, adapters.map((a) => a.path), flags.force === true);
      const baseConfig = flags.baseConfig ? await readBaseConfig(flags.baseConfig, hubOptions(flags)) : undefined;
      const progress = lazyProgress('merging', Boolean(flags.quiet || flags.json));
      const report = await mergeAdapters({
        hub: hubOptions(flags),
        ...options,
        adapters,
        method: flags.method,
        out: flags.out,
        format: flags.format,
        outFormat: flags.outFormat,
        dtype: flags.dtype ?? 'F32',
        baseConfig,
        overwrite: flags.force ?? false,
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
