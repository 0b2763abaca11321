import { resolve } from 'node:path';
import type { Command } from 'commander';
import { METHOD_NAMES, describeMethods, executeMerge, readMergeConfig, type MergeModelsReport } from '../merge/index.js';
import { referencedPaths } from '../merge/sources.js';
import { parseShardSize } from '../io/safetensors.js';
import { UsageError, parseIntFlag } from './errors.js';
import { formatBytes } from './format.js';
import { addMergekitFlags, MERGEKIT_FLAG_NAMES, mergekitFlagNotes } from './mergekit-flags.js';
import { addOutputFlags, helpStyle, parseShardSizeFlag, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag, printReport } from './output.js';

interface MergeFlags {
  offline?: boolean;
  out?: string;
  shardSize: string;
  seed?: string;
  maxMemory?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function summaryLines(r: MergeModelsReport): string[] {
  const dtypes = Object.entries(r.dtypes).map(([d, n]) => `${d}×${n}`).join(', ');
  const lines = [
    `merged ${r.models.length} model(s) with ${r.method} into ${r.out} in ${r.seconds.toFixed(1)} s`,
    ...r.models.map((m) => `  ${m === r.baseModel ? 'base ' : '     '}${m}`),
    `wrote ${r.tensors} tensors (${r.layers} layers; ${dtypes}), ${formatBytes(r.bytes)} in ${r.shards} shard(s)`,
    `files: ${r.files.join(', ')}`,
  ];
  for (const note of r.notes) lines.push(`note: ${note}`);
  return lines;
}

function parseMaxMemory(value: string): number {
  try {
    return parseShardSize(value);
  } catch {
    throw new UsageError(`--max-memory: "${value}" is not a size; use e.g. 8GB, 512MB, 2GiB or a number of bytes`);
  }
}

/** The output folder: `merge config.yml ./out` (mergekit-yaml's order) or --out; both only if they agree. */
function outFolder(positional: string | undefined, flag: string | undefined): string {
  if (positional !== undefined && flag !== undefined && resolve(positional) !== resolve(flag)) {
    throw new UsageError(`two output folders: ${positional} (argument) and --out ${flag}; give one`);
  }
  const out = positional ?? flag;
  if (out === undefined) throw new UsageError('no output folder: loraforge merge CONFIG.yml OUT_DIR (or --out OUT_DIR)');
  return out;
}

export function registerMerge(program: Command): void {
  const command = helpStyle(program.command('merge <config> [out]'))
    .description(
      `Merge whole models as a mergekit-style YAML config describes (${METHOD_NAMES.join(', ')}). ` +
        'Streams one tensor at a time: memory is bounded by the largest tensor (about 2 × (models + working arrays) + 1 copies of it as f32), whatever the model size.',
    )
    .option('--out <dir>', 'output model folder, created atomically (required: here or as the second argument, as mergekit-yaml takes it)')
    .option('--shard-size <size>', 'largest output shard, e.g. 5GB, 500MB, 2GiB', '5GB')
    .option('--seed <n>', 'seed of the random masks of dare_* and della* (default: 0)')
    .option(
      '--max-memory <size>',
      'tensor data held at once, as f32, e.g. 8GB: the tensors being merged and the one being written (default: two merges of the largest tensor when they fit in a quarter of the available memory, else one; ' +
        'more lets large tensors merge in parallel, faster with spare cores)',
    );
  addOutputFlags(addMergekitFlags(command), { threads: false, json: 'print the summary as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Methods and parameters (mergekit names, defaults and formulas):
${describeMethods()}

Parameters may be a scalar, a gradient list interpolated across the layers of a slice
([0, 0.5, 1]), or a filter list matched against tensor names ([{filter: self_attn, value: 0.3},
{value: 0.5}]). Model paths are local folders, relative to the working directory;
./base+./my-lora is the model read through a PEFT adapter (LoRA, DoRA, EDoRA), applied on the fly.

mergekit-yaml's own flags (${MERGEKIT_FLAG_NAMES.join(', ')}, and their --no- forms)
are accepted with a one-line note on what loraforge does instead, or refused where it does not do what they ask.

Examples:
  # merge.yaml
  merge_method: ties
  base_model: ./Llama-3.2-1B
  models:
    - model: ./llama-math
      parameters: {weight: 0.6, density: 0.5}
    - model: ./llama-code
      parameters: {weight: 0.4, density: 0.5}
  dtype: bfloat16

  loraforge merge merge.yaml ./merged
  loraforge merge stack.yaml --out ./frankenmerge --shard-size 2GB --json
  loraforge merge dare.yaml --out ./merged --seed 42 --force
${HUB_IDS_HELP}`,
    )
    .action(async (configPath: string, outArg: string | undefined, flags: MergeFlags) => {
      const out = outFolder(outArg, flags.out);
      const maxShardBytes = parseShardSizeFlag(flags.shardSize);
      const seed = parseIntFlag('--seed', flags.seed, 0);
      const maxMemory = flags.maxMemory === undefined ? undefined : parseMaxMemory(flags.maxMemory);
      for (const note of mergekitFlagNotes(flags as unknown as Record<string, unknown>)) process.stderr.write(`loraforge: note: ${note}\n`);
      const config = await readMergeConfig(configPath);
      // the models (and adapters) are inputs too: an --out inside one is a usage error now, not a failure after the plan
      await checkOutFlag(out, await referencedPaths(config, process.cwd()), flags.force === true);
      const progress = lazyProgress('merging', Boolean(flags.quiet || flags.json));
      const report = await executeMerge({
        hub: hubOptions(flags),
        config,
        out,
        maxShardBytes,
        seed,
        maxMemory,
        overwrite: flags.force ?? false,
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
