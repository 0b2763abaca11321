import type { Command } from 'commander';
import { applyAdapters, type ApplyReport } from '../apply/apply.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import { parseIntFlag } from './errors.js';
import { table } from './format.js';
import { addOutputFlags, collect, dtypeOption, helpStyle, parseAdapterFlag, parseShardSizeFlag, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag, printReport } from './output.js';

interface ApplyFlags {
  offline?: boolean;
  base: string;
  adapter: string[];
  out: string;
  dtype?: FloatDType;
  shardSize: string;
  threads?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function summaryLines(r: ApplyReport): string[] {
  const rows = [['adapter', 'weight', 'variant', 'modules', 'saved tensors']];
  for (const a of r.adapters) rows.push([a.dir, String(a.weight), a.variant, String(a.modules), String(a.fullTensors)]);
  const lines = [
    `merged ${r.adapters.length} adapter(s) into ${r.changedTensors} of ${r.tensors} tensors → ${r.out} in ${r.seconds.toFixed(1)} s`,
    '',
    table(rows),
    '',
    `files: ${r.files.join(', ')}`,
  ];
  const stacks = r.updates.filter((u) => u.experts);
  if (stacks.length) {
    const experts = stacks.reduce((n, u) => n + u.experts!.count, 0);
    lines.push(`expert stacks: ${stacks.length} merged (${experts} experts in all, one LoRA each)`);
  }
  if (r.addedTensors.length) lines.push(`added tensors (not in the base): ${r.addedTensors.join(', ')}`);
  for (const a of r.adapters) if (a.reconstrConfig) lines.push(`EDoRA reconstr_config: ${a.reconstrConfig}`);
  for (const note of r.notes) lines.push(`note: ${note}`);
  return lines;
}

export function registerApply(program: Command): void {
  const command = helpStyle(program.command('apply'))
    .description(
      "Merge LoRA, rsLoRA, DoRA or EDoRA adapters into a base model and write a full model folder: PEFT's merge_and_unload, " +
        'streamed tensor by tensor (embedding LoRA, MoE expert stacks and modules_to_save tensors included).',
    )
    .requiredOption('--base <path>', 'base model folder (or .safetensors file)')
    .requiredOption('--adapter <dir[:weight]>', 'PEFT adapter folder and its weight (1 if left out); repeat to apply several, in order', collect)
    .requiredOption('--out <dir>', 'output model folder (written atomically)')
    .addOption(dtypeOption('output dtype of every tensor', "each tensor keeps the base's"))
    .option('--shard-size <size>', 'maximum size of a weight shard', '5GB');
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Each adapter changes every weight it targets from W to W' (LoRA: W + s·B·A; DoRA: m/‖W + s·B·A‖ ·
(W + s·B·A) per output row; EDoRA: the same with s·B·R·A); a weight w makes that W + w·(W' − W).
Several adapters are applied one after the other in the order given, each to the result of the
previous ones, as PEFT does. For plain LoRA the order does not matter; for DoRA it does.
LoRA on 3-D MoE expert parameters (PEFT target_parameters, e.g. mlp.experts.gate_up_proj) is
merged expert by expert into that tensor, [experts, out, in] or [experts, in, out] as the base
stores it; DoRA is not defined there and is refused.
config.json, the tokenizer and other non-weight files are copied from the base.

Examples:
  loraforge apply --base ./Llama-3.2-1B --adapter ./my-dora --out ./merged
  loraforge apply --base ./Qwen2.5-7B --adapter ./math:0.7 --adapter ./style:0.3 --out ./merged --dtype bf16
  loraforge apply --base ./base --adapter ./edora/checkpoint-500 --out ./merged --shard-size 2GB --json
${HUB_IDS_HELP}`,
    )
    .action(async (flags: ApplyFlags) => {
      const adapters = flags.adapter.map((spec) => parseAdapterFlag(spec));
      const maxShardBytes = parseShardSizeFlag(flags.shardSize);
      const threads = parseIntFlag('--threads', flags.threads, 1);
      await checkOutFlag(flags.out, [flags.base, ...adapters.map((a) => a.dir)], flags.force === true);
      const progress = lazyProgress('apply', Boolean(flags.quiet || flags.json));
      const report = await applyAdapters({
        hub: hubOptions(flags),
        base: flags.base,
        adapters,
        out: flags.out,
        dtype: flags.dtype,
        maxShardBytes,
        overwrite: flags.force ?? false,
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
