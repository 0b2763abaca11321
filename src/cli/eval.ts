import type { Command } from 'commander';
import { evaluate, type EvalReport } from '../eval/eval.js';
import { getBackend } from '../linalg/index.js';
import { UsageError } from '../errors.js';
import { parseIntFlag } from './errors.js';
import { table } from './format.js';
import { addOutputFlags, collect, helpStyle, parseAdapterFlag, parseKlPositions, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { printReport } from './output.js';

interface EvalFlags {
  offline?: boolean;
  model: string;
  adapter?: string[];
  text?: string;
  prompts?: string;
  lines?: boolean;
  ctx: string;
  stride?: string;
  maxTokens?: string;
  refModel?: string;
  refAdapter?: string[];
  klTopk?: string;
  klPositions: string;
  threads?: string;
  json?: boolean;
  quiet?: boolean;
}


const fmt = (x: number, digits = 4) => (Math.abs(x) >= 1000 ? x.toFixed(2) : x.toPrecision(digits + 2));

function summaryLines(r: EvalReport): string[] {
  const what = r.adapters.length ? `${r.model} + ${r.adapters.map((a) => a.dir + (a.weight !== undefined ? `:${a.weight}` : '')).join(' + ')}` : r.model;
  const lines = [
    `${what} on ${r.source.file} (${r.source.mode}${r.ctx ? `, ${r.windows} windows of ${r.ctx} tokens, stride ${r.stride}` : `, ${r.windows} prompts`}, ${r.scoredPositions} scored positions)`,
    '',
  ];
  const rows = [['', 'perplexity', 'mean NLL', ...(r.bitsPerByte !== undefined ? ['bits/byte'] : [])]];
  rows.push(['model', fmt(r.perplexity), fmt(r.meanNll), ...(r.bitsPerByte !== undefined ? [fmt(r.bitsPerByte)] : [])]);
  if (r.reference) rows.push(['reference', fmt(r.reference.perplexity), fmt(r.reference.meanNll), ...(r.bitsPerByte !== undefined ? [''] : [])]);
  lines.push(table(rows));
  if (r.reference) {
    const { kl } = r.reference;
    lines.push(
      '',
      `reference: ${r.reference.model}${r.reference.adapters.length ? ` + ${r.reference.adapters.map((a) => a.dir).join(' + ')}` : ''}`,
      `PPL ratio (model ÷ reference): ${r.reference.pplRatio.toFixed(4)}`,
      `KL(reference ‖ model) ${fmt(kl.forward)}  KL(model ‖ reference) ${fmt(kl.reverse)}  symmetric ${fmt(kl.symmetric)} nats` +
        ` (${kl.topK ? `top-${kl.topK} + rest` : 'whole vocabulary'}, ${kl.positions} positions: ${kl.on})`,
      `top-1 agreement: ${(100 * r.reference.top1Agreement).toFixed(1)}%`,
    );
  }
  if (r.prompts) {
    lines.push('', table([['prompt', 'tokens', 'perplexity'], ...r.prompts.map((p) => [p.prompt.length > 60 ? `${p.prompt.slice(0, 57)}...` : p.prompt, String(p.tokens), fmt(p.perplexity)])]));
  }
  lines.push('', `tokenizer: ${r.tokenizer.bosId !== undefined ? `BOS ${r.tokenizer.bosId} first, ` : 'no BOS, '}EOS ${r.tokenizer.eosId} (${r.tokenizer.eosSource}); ${r.seconds.toFixed(1)} s`);
  return lines;
}

export function registerEval(program: Command): void {
  const command = helpStyle(program.command('eval'))
    .description(
      'Perplexity of a model (plus adapters applied on the fly, never merged into files) over a text or a list of prompts, ' +
        'and with --ref-model how far its next-token distributions are from another model: KL both ways, top-1 agreement, PPL ratio.',
    )
    .requiredOption('--model <dir>', 'model folder (config.json, tokenizer.json, safetensors)')
    .option('--adapter <dir[:scale]>', 'PEFT adapter (LoRA, rsLoRA, DoRA, EDoRA) applied on the fly, with its scale (1 if left out); repeat for several', collect)
    .option('--text <file>', 'text to measure perplexity on (required: this or --prompts)')
    .option('--prompts <file>', 'one prompt per line, each scored on its own (required: this or --text)')
    .option('--lines', 'each line of --text is a sentence followed by EOS (the tinyfam / sentence-corpus convention)')
    .option('--ctx <n>', 'window length in tokens', '512')
    .option('--stride <n>', 'tokens between window starts; each window scores only tokens no earlier window scored (default: --ctx)')
    .option('--max-tokens <n>', 'use only the first N tokens of the text')
    .option('--ref-model <dir>', 'reference model with the same tokenizer: KL, top-1 agreement, PPL ratio')
    .option('--ref-adapter <dir[:scale]>', 'adapter applied to the reference model; repeatable', collect)
    .option('--kl-topk <k>', "approximate KL over the reference's K most likely tokens plus one bucket for the rest (default: exact)")
    .option('--kl-positions <all|tail:N>', 'positions KL is measured on: all scored ones, or the last N of each window', 'all');
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Windows: the text is one token stream (with --lines: each line encoded on its own, then EOS);
windows of --ctx tokens start every --stride tokens (default --ctx: no overlap) and a final
partial window is dropped, as llama.cpp's perplexity tool does. Each window is its own sequence
with BOS first where the tokenizer adds one; the first window scores every token the model
predicts, a later one only the --stride tokens no earlier window scored (the Hugging Face
perplexity guide's sliding window). PPL = exp(mean NLL) over all scored positions, whole
vocabulary. Numbers published for sentence-per-line corpora (and tinyfam's references) use
--lines --ctx 128 (or their window) with the default stride.
The EOS appended by --lines is the model's own (generation_config.json, else config.json, else
tokenizer_config.json): for Qwen that is <|endoftext|>, not the chat template's <|im_end|>.
KL: mean over positions of Σ P log(P/Q), forward = KL(reference ‖ model), reverse = KL(model ‖
reference), symmetric = their mean. --kl-topk K gives a lower bound of the exact value.
Memory: all windows pass one layer before the next is read, so memory is one layer plus the
activations whatever the model's depth.

Examples:
  loraforge eval --model ./Llama-3.2-1B --text wiki.test.raw --ctx 512
  loraforge eval --model ./base --adapter ./my-lora --text eval.txt --lines --ctx 128 --ref-model ./fine-tuned
  loraforge eval --model ./merged --prompts prompts.txt --ref-model ./base --kl-topk 512 --kl-positions tail:8 --json
${HUB_IDS_HELP}`,
    )
    .action(async (flags: EvalFlags) => {
      if ((flags.text === undefined) === (flags.prompts === undefined)) throw new UsageError('eval: give either --text FILE or --prompts FILE');
      if (flags.refAdapter && !flags.refModel) throw new UsageError('--ref-adapter needs --ref-model');
      const threads = parseIntFlag('--threads', flags.threads, 1);
      const progress = lazyProgress('eval', Boolean(flags.quiet || flags.json));
      const report = await evaluate({
        hub: hubOptions(flags),
        model: flags.model,
        adapters: (flags.adapter ?? []).map((a) => parseAdapterFlag(a)),
        text: flags.text,
        prompts: flags.prompts,
        lines: flags.lines ?? false,
        ctx: parseIntFlag('--ctx', flags.ctx, 2),
        stride: parseIntFlag('--stride', flags.stride, 1),
        maxTokens: parseIntFlag('--max-tokens', flags.maxTokens, 1),
        reference: flags.refModel ? { model: flags.refModel, adapters: (flags.refAdapter ?? []).map((a) => parseAdapterFlag(a, '--ref-adapter')) } : undefined,
        klTopK: parseIntFlag('--kl-topk', flags.klTopk, 1),
        klPositions: parseKlPositions(flags.klPositions),
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
