import type { Command } from 'commander';
import { compareMarkdown, compareModels, type CompareReport } from '../compare/compare.js';
import { getBackend } from '../linalg/index.js';
import { parseShardSize } from '../io/safetensors.js';
import { parseIntFlag, UsageError } from './errors.js';
import { addOutputFlags, collect, helpStyle, parseAdapterFlag, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag, printReport } from './output.js';

interface CompareFlags {
  offline?: boolean;
  model: string;
  adapter?: string[];
  against: string;
  againstAdapter?: string[];
  prompts: string;
  maxNewTokens: string;
  maxMemory?: string;
  chat?: boolean;
  ignoreEos?: boolean;
  out?: string;
  threads?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function summaryLines(r: CompareReport): string[] {
  const lines = compareMarkdown(r).trimEnd().split('\n');
  if (r.files.length) lines.push(`written: ${r.files.join(', ')}`);
  return lines;
}

function parseMaxMemory(value: string): number {
  try {
    return parseShardSize(value);
  } catch {
    throw new UsageError(`--max-memory: "${value}" is not a size; use e.g. 4GB, 512MB, 2GiB or a number of bytes`);
  }
}

export function registerCompare(program: Command): void {
  const command = helpStyle(program.command('compare'))
    .description(
      'Answer the same prompts with two models (each a folder plus adapters applied on the fly) by deterministic greedy decoding, ' +
        'and show the answers side by side.',
    )
    .requiredOption('--model <dir>', 'first model folder')
    .option('--adapter <dir[:scale]>', 'adapter applied on the fly to --model; repeatable', collect)
    .requiredOption('--against <dir>', 'second model folder')
    .option('--against-adapter <dir[:scale]>', 'adapter applied on the fly to --against; repeatable', collect)
    .requiredOption('--prompts <file>', 'one prompt per line')
    .option('--max-new-tokens <n>', 'tokens generated per answer at most', '128')
    .option('--chat', "render each prompt as a user turn with each model's chat template (tokenizer_config.json)")
    .option('--ignore-eos', 'keep generating after an end-of-sequence token (as llama.cpp --ignore-eos)')
    .option('--max-memory <size>', 'keep a model in memory while it answers only if its f32 weights fit in this, e.g. 4GB, 512MB (default: 70% of the free memory)')
    .option('--out <dir>', 'also write results.jsonl and results.md there (atomically)');
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Greedy: each new token is the most likely one (lowest id on an exact tie), with a KV cache; the
same inputs always give the same answers. Generation stops at the model's end-of-sequence ids
(generation_config.json, config.json, tokenizer_config.json) unless --ignore-eos. Without --chat a
prompt is encoded as plain text, BOS first where the tokenizer adds one. Each model is loaded
once and kept in memory (as f32) while it answers every prompt when it fits in --max-memory;
a larger one is streamed, every layer read again for every token (slow: a warning says so). The
report gives tokens/s per answer and the smallest top-1/top-2 logit margin (a near-tie is where
two close models part).

Examples:
  loraforge compare --model ./base --adapter ./my-lora --against ./base --prompts prompts.txt
  loraforge compare --model ./merged --against ./fine-tuned --prompts prompts.txt --chat --max-new-tokens 64 --out ./cmp
${HUB_IDS_HELP}`,
    )
    .action(async (flags: CompareFlags) => {
      const threads = parseIntFlag('--threads', flags.threads, 1);
      const model = { model: flags.model, adapters: (flags.adapter ?? []).map((a) => parseAdapterFlag(a)) };
      const against = { model: flags.against, adapters: (flags.againstAdapter ?? []).map((a) => parseAdapterFlag(a, '--against-adapter')) };
      if (flags.out) {
        const inputs = [flags.prompts, model.model, against.model, ...model.adapters.map((a) => a.dir), ...against.adapters.map((a) => a.dir)];
        await checkOutFlag(flags.out, inputs, flags.force === true);
      }
      const progress = lazyProgress('compare', Boolean(flags.quiet || flags.json));
      const report = await compareModels({
        hub: hubOptions(flags),
        model,
        against,
        prompts: flags.prompts,
        maxNewTokens: parseIntFlag('--max-new-tokens', flags.maxNewTokens, 1),
        maxMemory: flags.maxMemory === undefined ? undefined : parseMaxMemory(flags.maxMemory),
        onWarning: (message) => {
          progress.done(); // the bar redraws on its next tick, below the warning
          process.stderr.write(`warning: ${message}\n`);
        },
        chat: flags.chat ?? false,
        ignoreEos: flags.ignoreEos ?? false,
        out: flags.out,
        overwrite: flags.force ?? false,
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
