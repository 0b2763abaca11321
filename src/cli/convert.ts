import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { convertAdapter, DEFAULT_ENERGY, DEFAULT_MAX_RANK_FACTOR, type ConvertReport } from '../convert/convert.js';
import { describePolicy, type RankPolicy } from '../lowrank/rank-policy.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import { ADAPTER_FORMATS, type AdapterFormat } from '../lora/sink.js';
import { addOutputFlags, dtypeOption, helpStyle, hubOptions, HUB_IDS_HELP } from './options.js';
import { checkOutFlag, printReport } from './output.js';
import { lazyProgress } from './progress.js';
import { UsageError, parseFloatFlag, parseIntFlag } from './errors.js';
import { table } from './format.js';
import { readJsonFile } from '../io/json-file.js';

interface ConvertFlags {
  offline?: boolean;
  adapter: string;
  base?: string;
  to: string;
  out: string;
  rank?: string;
  energy?: string;
  maxRank?: string;
  format: AdapterFormat;
  dtype?: FloatDType;
  seed?: string;
  threads?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function formatError(e: number): string {
  return e === 0 ? '0' : e < 1e-3 ? e.toExponential(1) : e.toFixed(4);
}

function summaryLines(r: ConvertReport): string[] {
  const policy = r.policy === 'copy' ? 'copy' : describePolicy(r.policy);
  const rows = [['module', 'source', 'action', 'rank', 'rel. error']];
  for (const m of r.modules) rows.push([m.name, m.method, m.action, `${m.sourceRank} → ${m.rank}`, formatError(m.relError) + (m.note ? `  (${m.note})` : '')]);
  const lines = [
    `converted ${r.adapter} (${r.variant}) to plain LoRA (${policy}) → ${r.out} (${r.format}) in ${r.seconds.toFixed(1)} s`,
    '',
    table(rows),
    '',
    `relative error = ‖(W′ − W) − B·A‖_F / ‖W′ − W‖_F per module; max ${formatError(r.maxRelError)}`,
  ];
  if (r.fullTensors.length) lines.push(`copied full tensors (modules_to_save): ${r.fullTensors.join(', ')}`);
  for (const note of r.notes) lines.push(`note: ${note}`);
  return lines;
}

/**
 * Whether the adapter's config says DoRA (EDoRA too), to refuse a missing --base before any work.
 * An unreadable config is left to the library, which names what is wrong with the folder.
 */
async function usesDora(adapterDir: string): Promise<boolean> {
  try {
    return ((await readJsonFile(join(adapterDir, 'adapter_config.json'))) as { use_dora?: unknown }).use_dora === true;
  } catch {
    return false;
  }
}

export function registerConvert(program: Command): void {
  const command = helpStyle(program.command('convert'))
    .description(
      "Convert a DoRA or EDoRA adapter to a plain LoRA (PEFT and/or llama.cpp GGUF) whose B·A approximates each module's W′ − W, " +
        'with the relative error of every module reported.',
    )
    .requiredOption('--adapter <dir>', 'PEFT adapter folder (DoRA, EDoRA, LoRA)')
    .option('--base <path>', 'the base model the adapter was trained on (required for DoRA/EDoRA adapters and for GGUF output)')
    .addOption(new Option('--to <kind>', 'target adapter type').choices(['lora']).default('lora'))
    .requiredOption('--out <dir>', 'output adapter folder (written atomically)')
    .option('--rank <n>', 'fixed rank for every converted module')
    .option('--energy <f>', `smallest rank keeping this fraction of ‖W′ − W‖²_F (default: ${DEFAULT_ENERGY})`)
    .option('--max-rank <n>', `upper bound on the rank chosen by --energy (default: ${DEFAULT_MAX_RANK_FACTOR}× each module's rank)`)
    .addOption(new Option('--format <f>', 'output format').choices(ADAPTER_FORMATS).default('peft'))
    .addOption(dtypeOption('storage dtype of A and B', 'f32'))
    .option('--seed <n>', 'seed of the randomized SVD (default: 0)');
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
DoRA's change to a weight, W′ − W = diag(m/‖W + s·B·A‖)·(W + s·B·A) − W, is full rank in general
(rescaling the rows of W is not low-rank), so the LoRA approximates it: the rank is --rank, or the
smallest rank that keeps --energy of its squared Frobenius norm (capped at --max-rank, by default
4× the module's own rank). The error
reported for each module is measured on the factors written. Plain LoRA modules are copied as they
are, unless --rank or --energy is given: then they are re-factored exactly and truncated.

Examples:
  loraforge convert --adapter ./my-dora --base ./Llama-3.1-8B --to lora --out ./as-lora --energy 0.99
  loraforge convert --adapter ./my-edora --base ./Qwen2.5-7B --out ./as-lora --rank 64 --format both
  loraforge convert --adapter ./my-dora --base ./base --out ./as-lora --json | jq '.modules[] | .relError'
${HUB_IDS_HELP}`,
    )
    .action(async (flags: ConvertFlags) => {
      if (flags.rank !== undefined && flags.energy !== undefined) throw new UsageError('give either --rank or --energy, not both');
      if (flags.maxRank !== undefined && flags.energy === undefined && flags.rank !== undefined) throw new UsageError('--max-rank goes with --energy, not --rank');
      let policy: RankPolicy | undefined;
      if (flags.rank !== undefined) policy = { mode: 'rank', rank: parseIntFlag('--rank', flags.rank, 1) };
      else if (flags.energy !== undefined || flags.maxRank !== undefined) {
        policy = {
          mode: 'energy',
          energy: parseFloatFlag('--energy', flags.energy, [Number.MIN_VALUE, 1]) ?? DEFAULT_ENERGY,
          maxRank: parseIntFlag('--max-rank', flags.maxRank, 1),
        };
      }
      if (flags.format !== 'peft' && !flags.base) throw new UsageError(`--format ${flags.format} writes GGUF, which needs the base model: pass --base`);
      if (!flags.base && (await usesDora(flags.adapter))) {
        throw new UsageError(`--adapter ${flags.adapter} is a DoRA/EDoRA adapter: pass --base (the model it was trained on), since W′ − W depends on the base weights`);
      }
      const threads = parseIntFlag('--threads', flags.threads, 1);
      await checkOutFlag(flags.out, [flags.adapter, ...(flags.base ? [flags.base] : [])], flags.force === true);
      const progress = lazyProgress('convert', Boolean(flags.quiet || flags.json));
      const report = await convertAdapter({
        hub: hubOptions(flags),
        adapter: flags.adapter,
        base: flags.base,
        out: flags.out,
        to: 'lora',
        policy,
        format: flags.format,
        dtype: flags.dtype,
        seed: parseIntFlag('--seed', flags.seed, 0),
        overwrite: flags.force ?? false,
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
