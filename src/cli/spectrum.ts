import type { Command } from 'commander';
import { getBackend } from '../linalg/index.js';
import { groupByModuleType } from '../report/charts.js';
import { writeSpectrumOutputs } from '../spectrum/output.js';
import { parseRegexFlag } from './selector-flags.js';
import { adapterSpectrum, deltaSpectrum, DEFAULT_TOP, type SpectrumResult } from '../spectrum/spectrum.js';
import { parseIntFlag, UsageError } from './errors.js';
import { formatPercent, table } from './format.js';
import { addOutputFlags, helpStyle, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag } from './output.js';

/** The input is either an adapter or a model pair; says which, or why the flags are wrong. */
export function sourceFlags(opts: { adapter?: string; modelA?: string; modelB?: string }): { adapter: string } | { modelA: string; modelB: string } {
  if (opts.adapter !== undefined) {
    if (opts.modelA !== undefined || opts.modelB !== undefined) throw new UsageError('pass either --adapter or --model-a/--model-b, not both');
    return { adapter: opts.adapter };
  }
  if (opts.modelA === undefined || opts.modelB === undefined) {
    throw new UsageError('pass --adapter DIR, or both --model-a PATH and --model-b PATH');
  }
  return { modelA: opts.modelA, modelB: opts.modelB };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[(s.length - 1) >> 1];
}

function summaryRows(result: SpectrumResult): string[][] {
  const show = (v: number) => (v > result.top ? `>${result.top}` : String(v));
  return [
    ['module type', 'tensors', 'median σ₁', 'eff. rank 90%', '95%', '99%'],
    ...groupByModuleType(result.tensors).map(({ type, tensors }) => [
      type,
      String(tensors.length),
      median(tensors.map((t) => t.sigma[0] ?? 0)).toPrecision(4),
      ...(['p90', 'p95', 'p99'] as const).map((k) => show(median(tensors.map((t) => t.effectiveRank[k] ?? result.top + 1)))),
    ]),
  ];
}

/** Changed 1-D tensors listed one per row in the terminal; spectrum.json lists all. */
const VECTOR_ROWS = 20;

/** The changed 1-D tensors (norms, biases): no spectrum, but the change is said and sized. */
function changedVectorLines(result: SpectrumResult): string[] {
  const v = result.changed1d;
  if (!v.length) return [];
  const rows = [['1-D tensor', 'shape', 'rel. change'], ...v.slice(0, VECTOR_ROWS).map((t) => [t.name, `[${t.shape.join(', ')}]`, t.relChange === null ? 'A is zero' : formatPercent(t.relChange)])];
  const lines = ['', `${v.length} 1-D tensor(s) changed (no spectrum; rel. change ‖B − A‖/‖A‖):`, table(rows)];
  if (v.length > VECTOR_ROWS) lines.push(`… ${v.length - VECTOR_ROWS} more in spectrum.json "changed1d"`);
  return lines;
}

interface SpectrumFlags {
  offline?: boolean;
  adapter?: string;
  modelA?: string;
  modelB?: string;
  out: string;
  top: string;
  include?: string;
  seed: string;
  png: boolean;
  threads?: string;
  json?: boolean;
  quiet?: boolean;
  force?: boolean;
}

export function registerSpectrum(program: Command): void {
  const command = helpStyle(program.command('spectrum'))
    .description(
      'Per-tensor singular values of a LoRA adapter (exact, from its factors) or of the difference of two checkpoints (randomized SVD): energy captured per rank, effective ranks, and an offline HTML report with charts.',
    )
    .option('--adapter <path>', 'PEFT LoRA adapter folder, or kohya/diffusers LoRA .safetensors file (required: this, or --model-a and --model-b)')
    .option('--model-a <path>', 'first checkpoint (folder or .safetensors): Δ = B − A (required without --adapter)')
    .option('--model-b <path>', 'second checkpoint (required without --adapter)')
    .requiredOption('--out <dir>', 'output folder: spectrum.json, report.html, charts/')
    .option('--top <k>', 'singular values kept per tensor', String(DEFAULT_TOP))
    .option('--include <regex>', 'only tensors/modules whose name matches; an MoE expert is named <parameter>[e] (default: for checkpoints, weights inside layers.N.)')
    .option('--seed <n>', 'seed of the randomized SVD (checkpoint deltas)', '0')
    .option('--no-png', 'write the charts as SVG only');
  addOutputFlags(command, { threads: true, json: 'print a JSON summary on stdout' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Examples:
  loraforge spectrum --adapter ./my-lora --out ./my-lora-spectrum
  loraforge spectrum --model-a ./Llama-3.2-1B --model-b ./Llama-3.2-1B-Instruct --out ./spec --top 32
  loraforge spectrum --adapter ./my-lora --out ./spec --include 'self_attn' --json | jq '.moduleTypes'

  loraforge spectrum --adapter sdxl-style.safetensors --out ./style-spectrum

kohya/diffusers LoRA files (SD 1.5, SDXL, Flux): each module's (alpha/r)·up·down, a conv one as its
out × (in·kh·kw) delta; the layer is the index after "blocks"/"layers" in the name (input_blocks_4_… → 4,
double_blocks_7_… → 7), the module type the name after its last index (attn1_to_q, conv1, img_attn_qkv).

Open <out>/report.html in a browser (works offline); charts/*.svg and *.png are the same charts as files.
${HUB_IDS_HELP}`,
    )
    .action(async (opts: SpectrumFlags) => {
      const source = sourceFlags(opts);
      const top = parseIntFlag('--top', opts.top, 1);
      const seed = parseIntFlag('--seed', opts.seed, 0);
      const include = opts.include !== undefined ? parseRegexFlag('--include', opts.include) : undefined;
      const threads = parseIntFlag('--threads', opts.threads, 1);
      const inputs = 'adapter' in source ? [source.adapter] : [source.modelA, source.modelB];
      await checkOutFlag(opts.out, inputs, opts.force === true);

      const backend = await getBackend({ threads });
      const progress = lazyProgress('spectrum', opts.quiet === true);
      let result: SpectrumResult;
      try {
        result =
          'adapter' in source
            ? await adapterSpectrum({ hub: hubOptions(opts), backend, adapter: source.adapter, top, include, onProgress: progress.tick })
            : await deltaSpectrum({ hub: hubOptions(opts), backend, modelA: source.modelA, modelB: source.modelB, top, include, seed, onProgress: progress.tick });
      } finally {
        progress.done();
      }
      if (result.tensors.length === 0) throw new Error(`${inputs.join(', ')}: no tensor matched${include ? ` --include ${include.source}` : ''}; nothing to report`);
      const files = await writeSpectrumOutputs({ result, out: opts.out, overwrite: opts.force === true, png: opts.png });

      if (opts.json) {
        const summary = {
          out: opts.out,
          files,
          method: result.method,
          top: result.top,
          tensors: result.tensors.length,
          moduleTypes: groupByModuleType(result.tensors).map(({ type, tensors }) => ({
            type,
            tensors: tensors.length,
            effectiveRank: Object.fromEntries(tensors.map((t) => [t.name, t.effectiveRank])),
          })),
          skipped: result.skipped,
          changed1d: result.changed1d,
          nonTargetDiffering: result.nonTargetDiffering ?? [],
        };
        process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
        return;
      }
      const lines = [
        `${result.tensors.length} tensors (${result.method}, top ${result.top}) → ${opts.out}/report.html, spectrum.json, ${files.filter((f) => f.startsWith('charts')).length} chart files`,
        '',
        table(summaryRows(result)),
        ...changedVectorLines(result),
      ];
      const others = result.nonTargetDiffering ?? [];
      if (others.length) lines.push('', `${others.length} tensor(s) outside the LoRA targets differ (no spectrum, as extract makes no LoRA of them): ${others[0].name}${others.length > 1 ? ', …; see spectrum.json "nonTargetDiffering"' : ''}`);
      if (result.skipped.length) lines.push('', `${result.skipped.length} tensor(s) skipped; see spectrum.json "skipped"`);
      process.stdout.write(lines.join('\n') + '\n');
    });
}
