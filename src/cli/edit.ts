import type { Command } from 'commander';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import { ADAPTER_FORMATS, type AdapterFormat } from '../lora/sink.js';
import { editAdapter, editDelta, isEmptyEdit, type EditSummary, type SigmaEdit } from '../edit/edit.js';
import { editLoraFile } from '../edit/edit-lora-file.js';
import { isLoraFile } from '../lora/lora-file.js';
import { LORA_FILE_OUT_FORMATS, type LoraFileOutFormat } from '../lora/lora-file-output.js';
import { parseIndexList, parseNameList, parseRegexFlag, parseScaleList } from './selector-flags.js';
import type { ModuleSelector } from '../edit/selectors.js';
import { parseFloatFlag, parseIntFlag, UsageError } from './errors.js';
import { table } from './format.js';
import { addOutputFlags, dtypeOption, helpStyle, readBaseConfig, hubOptions, HUB_IDS_HELP } from './options.js';
import { sourceFlags } from './spectrum.js';
import { checkOutFlag, printReport } from './output.js';
import { lazyProgress } from './progress.js';

/** rows of the per-module table printed without --json */
const TABLE_ROWS = 20;

interface EditFlags {
  offline?: boolean;
  adapter?: string;
  modelA?: string;
  modelB?: string;
  rank?: string;
  out: string;
  zero?: string;
  keep?: string;
  scale?: string;
  perturb?: string;
  seed: string;
  layers?: string;
  modules?: string;
  include?: string;
  format: string;
  outFormat?: string;
  dtype?: FloatDType;
  baseConfig?: string;
  threads?: string;
  json?: boolean;
  quiet?: boolean;
  force?: boolean;
}

function parseEdit(opts: EditFlags): SigmaEdit {
  const edit: SigmaEdit = {
    keep: opts.keep !== undefined ? parseIndexList('--keep', opts.keep) : undefined,
    zero: opts.zero !== undefined ? parseIndexList('--zero', opts.zero) : undefined,
    scale: opts.scale !== undefined ? parseScaleList('--scale', opts.scale) : undefined,
    perturb: parseFloatFlag('--perturb', opts.perturb),
  };
  if (isEmptyEdit(edit)) throw new UsageError('no edit given: pass --zero, --keep, --scale or --perturb (to extract without editing, use loraforge extract)');
  return edit;
}

function parseSelector(opts: EditFlags): ModuleSelector {
  return {
    layers: opts.layers !== undefined ? new Set(parseIndexList('--layers', opts.layers)) : undefined,
    modules: opts.modules !== undefined ? new Set(parseNameList('--modules', opts.modules)) : undefined,
  };
}

function summaryLines(s: EditSummary): string[] {
  const edited = s.modules.filter((m) => m.edited);
  const rankChange = (m: EditSummary['modules'][number]) => (m.rankBefore === m.rankAfter ? String(m.rankAfter) : `${m.rankBefore}→${m.rankAfter}`);
  const sigma = (xs: number[] | undefined) => (xs ?? []).slice(0, 4).map((x) => x.toPrecision(3)).join(' ') + ((xs?.length ?? 0) > 4 ? ' …' : '');
  const rows = [['module', 'rank', 'σ before', 'σ after'], ...edited.slice(0, TABLE_ROWS).map((m) => [m.name, rankChange(m), sigma(m.sigmaBefore), sigma(m.sigmaAfter)])];
  const lines = [`${s.out} (${s.format}, ${s.dtype}): ${s.edited} module(s) edited, ${s.copied} unchanged${s.fullTensors ? `, ${s.fullTensors} full tensor(s) copied` : ''}`, '', table(rows)];
  if (edited.length > TABLE_ROWS) lines.push(`… ${edited.length - TABLE_ROWS} more (--json lists all)`);
  if (s.identical.length) lines.push(`${s.identical.length} module(s) identical in A and B: skipped, nothing written`);
  const d = s.nonTargetDiffering;
  if (d.length) lines.push(`${d.length} tensor(s) outside the LoRA targets differ, not written (as extract): ${d[0].name}${d.length > 1 ? ' … (--json lists all)' : ''}`);
  if (s.skipped.length) lines.push(`${s.skipped.length} tensor(s) skipped: ${s.skipped[0].name} (${s.skipped[0].reason})${s.skipped.length > 1 ? ' … (--json lists all)' : ''}`);
  return lines;
}

export function registerEdit(program: Command): void {
  const command = helpStyle(program.command('edit'))
    .description(
      "Zero, keep, scale or randomly perturb singular components of a LoRA adapter's modules (exact re-factorisation U·Σ·Vᵀ of each update), or of an adapter extracted from two checkpoints, and write a new adapter.",
    )
    .option('--adapter <path>', 'PEFT LoRA adapter folder, or kohya/diffusers LoRA .safetensors file, to edit (required: this, or --model-a and --model-b)')
    .option('--model-a <path>', 'base checkpoint: extract Δ = B − A at --rank, then edit (required without --adapter)')
    .option('--model-b <path>', 'fine-tuned checkpoint (required without --adapter)')
    .option('--rank <r>', 'rank extracted per tensor from --model-a/--model-b (required with them)')
    .requiredOption('--out <path>', 'output adapter folder; for a LoRA-file input, a .safetensors file (a folder with --out-format peft)')
    .option('--zero <list>', 'remove these components, e.g. 0,1,2 or 0-3 (0 = largest σ)')
    .option('--keep <list>', 'keep only these components, e.g. 0-7')
    .option('--scale <list>', 'multiply σᵢ by a factor, e.g. 0:0.5,1:2 or 4-7:0.1 (0 removes, negative flips)')
    .option('--perturb <eps>', 'multiply every σᵢ by (1 + eps·rᵢ), rᵢ ~ N(0,1) seeded by --seed')
    .option('--seed <n>', 'seed of --perturb (and of the randomized SVD for checkpoints)', '0')
    .option('--layers <list>', 'edit only modules in these layers (layers.N.; LoRA files: …blocks_N…), e.g. 20-31 or 0,2,4')
    .option('--modules <names>', 'edit only these module types, e.g. q_proj,v_proj (expert stacks: gate_up_proj, down_proj; LoRA files: attn1_to_q, conv1)')
    .option('--include <regex>', 'checkpoints: tensors to extract (default: weights inside layers.N.)')
    .option('--format <format>', `output format of a PEFT folder or model pair: ${ADAPTER_FORMATS.join(' | ')}`, 'peft')
    .option('--out-format <format>', `layout written from a LoRA file: ${LORA_FILE_OUT_FORMATS.join(' | ')} (default: the input's)`)
    .addOption(dtypeOption('storage dtype of the factors', "the input's"))
    .option('--base-config <path>', "base model config.json (or its folder), needed for --format gguf|both with --adapter");
  addOutputFlags(command, { threads: true, json: 'print a JSON summary on stdout' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Component indices are 0-based in descending σ order of each module. Edits apply as: --keep,
then --zero, then --scale, then --perturb. Removed components are dropped (the module's rank
shrinks; a module with none left keeps rank 1 with zero factors). lora_alpha is kept and the
factors absorb the change of alpha/r, so scaling·B·A is exactly the edited update.
MoE expert stacks (PEFT target_parameters) are edited expert by expert, selected by their
parameter's name (--modules gate_up_proj), and written back in PEFT's layout (--format peft only);
from a model pair, 3-D expert tensors are extracted expert by expert into such stacks.
kohya/diffusers LoRA files (SD 1.5, SDXL, Flux) are edited module by module ((alpha/r)·up·down, conv
modules as their out × (in·kh·kw) deltas) and written back in their layout (kohya: alpha kept, conv
4-D, header kept with ss_network_dim/alpha recomputed) or --out-format's; --layers takes the index
after "blocks"/"layers" in the name, --modules the name after its last index (attn1_to_q, conv1).
A module whose σ the edit leaves unchanged (e.g. --scale 0:1) is written exactly as read.

Examples:
  loraforge edit --adapter ./my-lora --out ./my-lora-no-top --zero 0
  loraforge edit --adapter ./my-lora --out ./my-lora-top8 --keep 0-7 --layers 20-31 --modules q_proj,v_proj
  loraforge edit --adapter ./my-lora --out ./my-lora-noisy --perturb 0.1 --seed 7
  loraforge edit --model-a ./base --model-b ./tuned --rank 16 --out ./edited --scale 0:0.5,1:2
  loraforge edit --adapter style.safetensors --out style-top4.safetensors --keep 0-3 --modules attn1_to_q,attn2_to_k
${HUB_IDS_HELP}`,
    )
    .action(async (opts: EditFlags) => {
      const source = sourceFlags(opts);
      const edit = parseEdit(opts);
      const select = parseSelector(opts);
      const seed = parseIntFlag('--seed', opts.seed, 0);
      const threads = parseIntFlag('--threads', opts.threads, 1);
      if (!ADAPTER_FORMATS.includes(opts.format as AdapterFormat)) throw new UsageError(`--format must be one of ${ADAPTER_FORMATS.join(', ')}, got "${opts.format}"`);
      const format = opts.format as AdapterFormat;
      const dtype = opts.dtype;
      const baseConfig = opts.baseConfig !== undefined ? await readBaseConfig(opts.baseConfig, hubOptions(opts)) : undefined;
      const inputs = 'adapter' in source ? [source.adapter] : [source.modelA, source.modelB];
      const file = 'adapter' in source && (await isLoraFile(source.adapter));
      if (opts.outFormat !== undefined) {
        if (!file) throw new UsageError('--out-format applies to kohya/diffusers LoRA files; PEFT folders and model pairs are written with --format');
        if (!LORA_FILE_OUT_FORMATS.includes(opts.outFormat as LoraFileOutFormat)) throw new UsageError(`--out-format must be one of ${LORA_FILE_OUT_FORMATS.join(', ')}, got "${opts.outFormat}"`);
      }
      if (file && format !== 'peft') throw new UsageError(`--format ${format} applies to PEFT folders and model pairs; a LoRA file is written in its layout, or the one --out-format names`);
      if ('adapter' in source) {
        if (opts.rank !== undefined) throw new UsageError('--rank applies to --model-a/--model-b; an adapter keeps its own ranks');
        if (opts.include !== undefined) throw new UsageError('--include applies to --model-a/--model-b; select adapter modules with --layers/--modules');
        if (!file && format !== 'peft' && !baseConfig) throw new UsageError(`--format ${format} needs --base-config (the base model's config.json) to name GGUF tensors`);
      } else if (opts.rank === undefined) {
        throw new UsageError('--model-a/--model-b need --rank R (the rank extracted before editing)');
      }
      const rank = parseIntFlag('--rank', opts.rank, 1) ?? 0;
      const include = opts.include !== undefined ? parseRegexFlag('--include', opts.include) : undefined;
      await checkOutFlag(opts.out, inputs, opts.force === true);

      const backend = await getBackend({ threads });
      const progress = lazyProgress('edit', opts.quiet === true);
      const common = { hub: hubOptions(opts), out: opts.out, edit, select, seed, format, dtype, baseConfig, overwrite: opts.force === true, onProgress: progress.tick };
      let summary: EditSummary;
      try {
        summary =
          'adapter' in source
            ? file
              ? await editLoraFile({ ...common, backend, adapter: source.adapter, outFormat: opts.outFormat as LoraFileOutFormat | undefined })
              : await editAdapter({ ...common, backend, adapter: source.adapter })
            : await editDelta({ ...common, backend, modelA: source.modelA, modelB: source.modelB, rank, include });
      } finally {
        progress.done();
      }
      printReport(summary, opts.json, summaryLines);
    });
}
