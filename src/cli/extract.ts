import type { Command } from 'commander';
import { extractLora, isLoraFileOut, loraFileReportPath, type ExtractOptions } from '../extract/index.js';
import { DEFAULT_MAX_RANK, DEFAULT_RANK, type RankPolicy } from '../lowrank/rank-policy.js';
import { EMBEDDINGS_MODES, type EmbeddingsMode } from '../extract/plan.js';
import { REPORT_FILE, type ExtractedTensor, type ExtractReport } from '../extract/report.js';
import type { ExtractEvalReport } from '../extract/evaluate.js';
import type { FloatDType } from '../io/types.js';
import { ADAPTER_FORMATS } from '../lora/sink.js';
import { LORA_FILE_FORMATS, type LoraFileFormat } from '../lora/lora-file-format.js';
import { parseFloatFlag, parseIntFlag, UsageError } from './errors.js';
import { dtypeOption, helpStyle, hubOptions, HUB_IDS_HELP } from './options.js';
import { formatBytes, formatPercent as pct, formatRange, tensorTable } from './format.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag } from './output.js';
import type { OnProgress } from '../progress.js';

interface ExtractFlags {
  modelA: string;
  modelB: string;
  out: string;
  rank?: string;
  energy?: string;
  maxRelError?: string;
  maxRank?: string;
  alpha?: string;
  targetModules?: string;
  include?: string;
  exclude?: string;
  format?: string;
  embeddings?: string;
  dtype?: FloatDType;
  seed: string;
  threads?: string;
  saveModules?: boolean;
  skip3d?: boolean;
  verify?: boolean;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
  evalText?: string;
  evalLines?: boolean;
  evalCtx?: string;
  evalMaxTokens?: string;
  offline?: boolean;
  convRank?: string;
  outFormat?: string;
  conv_dim?: string;
  textEncoders?: boolean;
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got "${value}"`);
  return value as T;
}

function regexFlag(flag: string, source: string | undefined): RegExp | undefined {
  if (source === undefined) return undefined;
  try {
    return new RegExp(source);
  } catch (err) {
    throw new UsageError(`${flag} ${JSON.stringify(source)} is not a valid regular expression: ${(err as Error).message}`);
  }
}

function policyFlags(f: ExtractFlags): RankPolicy {
  const given = [f.rank !== undefined && '--rank', f.energy !== undefined && '--energy', f.maxRelError !== undefined && '--max-rel-error'].filter(Boolean);
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} choose the rank in different ways: pass only one`);
  const maxRank = f.maxRank === undefined ? DEFAULT_MAX_RANK : parseIntFlag('--max-rank', f.maxRank, 1);
  if (f.energy !== undefined) {
    const energy = parseFloatFlag('--energy', f.energy, [0, 1]);
    if (energy === 0) throw new UsageError('--energy must be above 0 (the fraction of ‖ΔW‖² to capture, e.g. 0.95)');
    return { mode: 'energy', energy, maxRank };
  }
  if (f.maxRelError !== undefined) {
    const maxRelError = parseFloatFlag('--max-rel-error', f.maxRelError, [0, 1]);
    if (maxRelError === 1) throw new UsageError('--max-rel-error must be below 1 (e.g. 0.05 for 5%)');
    return { mode: 'max-rel-error', maxRelError, maxRank };
  }
  if (f.maxRank !== undefined) throw new UsageError('--max-rank caps --energy / --max-rel-error; with a fixed rank use --rank alone');
  return { mode: 'rank', rank: f.rank === undefined ? DEFAULT_RANK : parseIntFlag('--rank', f.rank, 1) };
}

function evalFlags(f: ExtractFlags, format: string): ExtractOptions['evalText'] {
  if (f.evalText === undefined) {
    const stray = [f.evalLines && '--eval-lines', f.evalCtx !== undefined && '--eval-ctx', f.evalMaxTokens !== undefined && '--eval-max-tokens'].filter(Boolean);
    if (stray.length) throw new UsageError(`${stray.join(', ')} only apply with --eval-text FILE`);
    return undefined;
  }
  if (format === 'gguf') throw new UsageError('--eval-text evaluates the PEFT adapter, and is not supported with --format gguf: use --format peft or both');
  return {
    text: f.evalText,
    lines: f.evalLines === true,
    ctx: f.evalCtx === undefined ? undefined : parseIntFlag('--eval-ctx', f.evalCtx, 2),
    maxTokens: f.evalMaxTokens === undefined ? undefined : parseIntFlag('--eval-max-tokens', f.evalMaxTokens, 1),
  };
}

/** Refuses at once an --out that is an input or a non-empty folder without --force. */
/** --conv-rank N (kohya's --conv_dim): the rank of k×k conv modules; --out-format; diffusion checkpoints only. */
function convFlags(f: ExtractFlags): Pick<ExtractOptions, 'convPolicy' | 'textEncoders' | 'outFormat'> {
  if (f.convRank !== undefined && f.conv_dim !== undefined) throw new UsageError('--conv-rank and --conv_dim are the same flag: pass one');
  const conv = f.convRank ?? f.conv_dim;
  const diffusionOnly = [conv !== undefined && (f.convRank !== undefined ? '--conv-rank' : '--conv_dim'), f.textEncoders && '--text-encoders', f.outFormat !== undefined && '--out-format'].filter(Boolean);
  if (diffusionOnly.length && !isLoraFileOut(f.out)) {
    throw new UsageError(`${diffusionOnly.join(' and ')} apply to diffusion checkpoints, whose LoRA is one kohya or diffusers file: give --out a path ending in .safetensors`);
  }
  return {
    ...(f.outFormat !== undefined ? { outFormat: oneOf<LoraFileFormat>('--out-format', f.outFormat, LORA_FILE_FORMATS) } : {}),
    ...(conv !== undefined ? { convPolicy: { mode: 'rank' as const, rank: parseIntFlag(f.convRank !== undefined ? '--conv-rank' : '--conv_dim', conv, 1) } } : {}),
    ...(f.textEncoders ? { textEncoders: true } : {}),
  };
}

/** LLM-adapter flags a LoRA file output (diffusion checkpoints) has no use for. */
function checkLoraFileFlags(f: ExtractFlags): void {
  if (!isLoraFileOut(f.out)) return;
  const given = [
    f.format !== undefined && '--format',
    f.embeddings !== undefined && '--embeddings',
    f.targetModules !== undefined && '--target-modules',
    f.saveModules && '--save-modules',
    f.skip3d && '--skip-3d',
    f.evalText !== undefined && '--eval-text',
  ].filter(Boolean);
  if (given.length) throw new UsageError(`--out ${f.out} is a LoRA file for diffusion checkpoints: ${given.join(', ')} apply only to LLM adapter folders`);
}

export function extractOptionsFromFlags(f: ExtractFlags): ExtractOptions {
  checkLoraFileFlags(f);
  const alpha = f.alpha === undefined ? undefined : parseFloatFlag('--alpha', f.alpha, [0, Infinity]);
  if (alpha === 0) throw new UsageError('--alpha must be above 0, e.g. 16');
  const targetModules = f.targetModules?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (targetModules !== undefined && targetModules.length === 0) throw new UsageError('--target-modules needs at least one module name, e.g. q_proj,v_proj');
  return {
    hub: hubOptions(f),
    modelA: f.modelA,
    modelB: f.modelB,
    out: f.out,
    policy: policyFlags(f),
    alpha,
    targetModules,
    include: regexFlag('--include', f.include),
    exclude: regexFlag('--exclude', f.exclude),
    format: f.format === undefined ? undefined : oneOf('--format', f.format, ADAPTER_FORMATS),
    embeddings: f.embeddings === undefined ? undefined : oneOf<EmbeddingsMode>('--embeddings', f.embeddings, EMBEDDINGS_MODES),
    dtype: f.dtype,
    seed: parseIntFlag('--seed', f.seed, 0),
    threads: f.threads === undefined ? undefined : parseIntFlag('--threads', f.threads, 1),
    saveModules: f.saveModules === true,
    skip3d: f.skip3d === true,
    verify: f.verify === true,
    overwrite: f.force === true,
    evalText: evalFlags(f, f.format ?? 'peft'),
    ...convFlags(f),
  };
}

// ---------------------------------------------------------------------------------------------
// The human summary
// ---------------------------------------------------------------------------------------------

function moduleType(t: ExtractedTensor): string {
  const path = t.experts?.parameter ?? t.module;
  return path.slice(path.lastIndexOf('.') + 1) + (t.experts ? ' (experts)' : '');
}

function extractTable(tensors: readonly ExtractedTensor[]): string {
  return tensorTable(tensors, {
    typeOf: moduleType,
    perTensor: {
      header: ['tensor', 'shape', 'rank', 'energy', 'rel. error', 'exact', 'time'],
      row: (t) => [
        t.name,
        `[${t.shape.join(', ')}]`,
        `${t.rank}${t.targetMet ? '' : '*'}`,
        pct(t.energy),
        pct(t.relError),
        t.exactRelError === undefined ? '' : pct(t.exactRelError),
        `${t.seconds.toFixed(2)}s`,
      ],
    },
    grouped: {
      header: ['module', 'tensors', 'rank', 'min energy', 'max rel. error', 'time'],
      row: (name, ts) => [
        name,
        String(ts.length),
        formatRange(ts.map((t) => t.rank)) + (ts.every((t) => t.targetMet) ? '' : '*'),
        pct(Math.min(...ts.map((t) => t.energy))),
        pct(Math.max(...ts.map((t) => t.relError))),
        `${ts.reduce((sum, t) => sum + t.seconds, 0).toFixed(2)}s`,
      ],
    },
  });
}

const num = (x: number) => (Math.abs(x) >= 1000 ? x.toFixed(1) : x.toPrecision(5));

/** The behavioural error beside the Frobenius one: what A + adapter does on the text, against B. */
function evalLines(e: ExtractEvalReport): string[] {
  const closed = e.klWithoutAdapter > 0 ? `, ${pct(1 - e.kl / e.klWithoutAdapter)} of KL(B ‖ A) closed` : '';
  return [
    `On ${e.text} (${e.mode === 'lines' ? 'a sentence per line, EOS after each' : 'plain text'}, ${e.windows} window(s) of ${e.ctx} tokens, ${e.scoredPositions} positions):`,
    `  perplexity: B ${num(e.perplexity.b)}, A ${num(e.perplexity.a)}, A + adapter ${num(e.perplexity.aPlusAdapter)}`,
    `  KL(B ‖ A + adapter) ${num(e.kl)} nats (KL(B ‖ A) ${num(e.klWithoutAdapter)}${closed})`,
    `  top-1 agreement with B: A + adapter ${pct(e.top1Agreement)}, A ${pct(e.top1AgreementWithoutAdapter)}`,
  ];
}

export function formatExtractReport(r: ExtractReport): string {
  const t = r.totals;
  const lines = [`Extracted ${t.tensors} LoRA module(s): ${r.modelB} − ${r.modelA} → ${r.out} (${r.format}, ${r.dtype})`];
  if (r.tensors.length) {
    lines.push('', extractTable(r.tensors));
    if (r.tensors.some((x) => !x.targetMet)) lines.push('* the rank cap (--max-rank, or the tensor size) was reached before the target');
  }
  if (r.skippedIdentical.length) lines.push('', `${r.skippedIdentical.length} target tensor(s) are identical in A and B: skipped, nothing written`);
  if (r.nonTargetDiffering.length) {
    lines.push('', `${r.nonTargetDiffering.length} tensor(s) outside the LoRA differ:`);
    for (const d of r.nonTargetDiffering.slice(0, 10)) {
      const change = d.relChange === null ? 'new shape' : `changed ${pct(d.relChange)}`;
      lines.push(`  ${d.name} [${d.shape.join(', ')}] ${change}${d.saved ? ', saved whole' : d.reason ? ` (${d.reason})` : ''}`);
    }
    if (r.nonTargetDiffering.length > 10) lines.push(`  … ${r.nonTargetDiffering.length - 10} more in ${REPORT_FILE}`);
    if (r.nonTargetDiffering.some((d) => !d.saved && !d.reason)) lines.push('  --save-modules writes these into the adapter whole');
  }
  if (r.skipped3d.length) lines.push('', `${r.skipped3d.length} 3-D expert tensor(s) left out (--skip-3d)`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  if (r.eval) lines.push('', ...evalLines(r.eval));
  lines.push(
    '',
    `${t.params.toLocaleString('en-US')} adapter parameters; read ${formatBytes(t.bytesRead)} in ${t.seconds.toFixed(2)} s ` +
      `(computing ${t.computeSeconds.toFixed(2)} s, waiting for reads ${t.readWaitSeconds.toFixed(2)} s); full report: ${isLoraFileOut(r.out) ? loraFileReportPath(r.out) : REPORT_FILE}`,
  );
  return lines.join('\n');
}

export function registerExtract(program: Command): void {
  helpStyle(program.command('extract'))
    .description('Extract the LoRA adapter that turns model A into model B (two fine-tunes of one base): ΔW = W_B − W_A ≈ B·A by truncated SVD, streamed tensor by tensor.')
    .requiredOption('--model-a <path>', 'the model the adapter applies to (folder or .safetensors file)')
    .requiredOption('--model-b <path>', 'the model the adapter should turn A into')
    .requiredOption('--out <path>', 'output folder for the adapter (written atomically); for diffusion checkpoints (SD 1.x/2.x, SDXL, Flux) one LoRA file (see --out-format): a path ending in .safetensors')
    .option('--rank <n>', `fixed LoRA rank for every module (default: ${DEFAULT_RANK})`)
    .option('--energy <f>', 'per module, the smallest rank capturing this fraction of ‖ΔW‖², e.g. 0.95')
    .option('--max-rel-error <f>', 'per module, the smallest rank with ‖ΔW − B·A‖/‖ΔW‖ at most this, e.g. 0.05')
    .option('--max-rank <n>', `cap for --energy / --max-rel-error (default: ${DEFAULT_MAX_RANK})`)
    .option('--alpha <n>', 'one lora_alpha for every module (scaling alpha/r; B is scaled to match) (default: alpha = rank, scaling 1)')
    .option('--target-modules <list>', 'comma-separated module names to extract (default: every linear weight of the decoder layers)')
    .option('--include <regex>', 'only tensors whose name matches are extracted')
    .option('--exclude <regex>', 'tensors whose name matches are not extracted')
    .option('--format <format>', `adapter format: ${ADAPTER_FORMATS.join(', ')} (default: peft)`)
    .option('--embeddings <mode>', 'embed_tokens / lm_head: skip, lora, or full (saved whole, needed when the vocabularies differ) (default: skip)')
    .option('--conv-rank <n>', 'diffusion: also extract k×k convs (ResNet blocks, down/upsamplers) at this rank, as kohya’s conv_dim (default: they are skipped and reported)')
    .option('--conv_dim <n>', 'alias of --conv-rank (kohya’s name)')
    .option('--text-encoders', 'diffusion: also extract the text encoders (SD: te; SDXL: te1 and te2, OpenCLIP in_proj split into q/k/v as kohya does)')
    .option(
      '--out-format <format>',
      `diffusion: the LoRA file's keys: ${LORA_FILE_FORMATS.join(' or ')} (unet./transformer.<path>.lora_A/B, for diffusers' load_lora_weights) (default: kohya; diffusers for SDXL diffusers U-Nets and diffusers Flux transformers, which kohya names by other paths)`,
    )
    .addOption(dtypeOption('adapter dtype', 'model B’s'))
    .option('--save-modules', 'save differing non-target tensors (norms, biases) whole, as PEFT modules_to_save')
    .option('--skip-3d', 'leave 3-D MoE expert tensors out (default: one LoRA per expert, PEFT target_parameters)')
    .option('--verify', 'compute every error exactly by GEMM (default: the first tensor of each module type)')
    .option('--seed <n>', 'seed of the randomized SVD (same seed, same bytes)', '0')
    .option('--threads <n>', 'GEMM threads (default: all cores)')
    .option('--eval-text <file>', 'after extracting, compare A + adapter with B on this text: perplexities, KL(B ‖ A + adapter), top-1 agreement (PEFT output)')
    .option('--eval-lines', 'each line of --eval-text is a sentence followed by EOS (the sentence-per-line convention)')
    .option('--eval-ctx <n>', 'window length in tokens for --eval-text (default: 512)')
    .option('--eval-max-tokens <n>', 'use only the first N tokens of --eval-text (default: all)')
    .option('--force', 'replace a non-empty --out')
    .option('--json', 'print the report as JSON on stdout instead of the table')
    .option('--quiet', 'no progress bar')
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Examples:
  loraforge extract --model-a meta-llama/Llama-3.2-1B --model-b ./my-finetune --out ./adapter --target-modules q_proj,v_proj
  loraforge extract --model-a ./Llama-3.2-1B-Instruct --model-b ./my-finetune --out ./adapter
  loraforge extract --model-a base --model-b tuned --out adapter --energy 0.95 --max-rank 64
  loraforge extract --model-a base --model-b tuned --out adapter --rank 32 --target-modules q_proj,v_proj --format both
  loraforge extract --model-a base --model-b tuned --out adapter --embeddings full --json | jq .totals
  loraforge extract --model-a base --model-b tuned --out adapter --eval-text wiki.txt --eval-max-tokens 8192
  loraforge extract --model-a sd_xl_base_1.0.safetensors --model-b my-sdxl.safetensors --out lora.safetensors --rank 32 --conv-rank 16
  loraforge extract --model-a flux1-dev.safetensors --model-b my-flux.safetensors --out flux-lora.safetensors --rank 16
  loraforge extract --model-a FLUX.1-dev/transformer --model-b my-flux/transformer --out flux-lora.safetensors --rank 16   # diffusers keys

Exit codes: 0 done, 1 bad input (files, shapes, NaN), 2 bad command line.
${HUB_IDS_HELP}`,
    )
    .action(async (flags: ExtractFlags) => {
      const opts = extractOptionsFromFlags(flags);
      await checkOutFlag(opts.out, [opts.modelA, opts.modelB, ...(opts.evalText ? [opts.evalText.text] : [])], opts.overwrite === true);
      const quiet = flags.quiet === true || flags.json === true;
      // one bar for the extraction, then a fresh one for each evaluation pass (its own phase and total)
      let phase: string | undefined;
      let progress = lazyProgress('extract', quiet);
      const onProgress: OnProgress = (e) => {
        if (e.phase !== phase) {
          progress.done();
          phase = e.phase;
          progress = lazyProgress(phase ?? 'extract', quiet);
        }
        progress.tick(e);
      };
      let report: ExtractReport;
      try {
        report = await extractLora({ ...opts, onProgress });
      } finally {
        progress.done();
      }
      for (const w of report.warnings) process.stderr.write(`loraforge: warning: ${w}\n`);
      process.stdout.write((flags.json ? JSON.stringify(report, null, 2) : formatExtractReport(report)) + '\n');
    });
}
