import type { Command } from 'commander';
import { transplantEmbeddings, DEFAULT_TRANSPLANT_PARAMS, type TransplantReport } from '../transplant/transplant.js';
import type { UntrainedRule } from '../transplant/blend.js';
import { getBackend } from '../linalg/index.js';
import { UsageError } from '../errors.js';
import { parseFloatFlag, parseIntFlag } from './errors.js';
import { table } from './format.js';
import { addOutputFlags, helpStyle, parseKlPositions, hubOptions, HUB_IDS_HELP } from './options.js';
import { lazyProgress } from './progress.js';
import { checkOutFlag, printReport } from './output.js';

interface TransplantFlags {
  offline?: boolean;
  base: string;
  donor: string;
  out: string;
  prompts?: string;
  pplCap: string;
  targetEmbFrac: string;
  alphaCapEmb: string;
  alphaFloorEmb: string;
  minTauEmb: string;
  targetHeadRows: string;
  alphaCapHead: string;
  alphaFloorHead: string;
  minTauHead: string;
  softClip: boolean;
  untrainedRows: string;
  maxShared?: string;
  klTopk: string;
  klPositions: string;
  trials: string;
  seed: string;
  saveTopk: string;
  threads?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}


function summaryLines(r: TransplantReport): string[] {
  const c = r.shared.counts;
  const lines = [
    `transplanted ${r.donor} → ${r.base} into ${r.out} in ${r.seconds.toFixed(1)} s`,
    `shared vocabulary: ${r.shared.pairs} tokens (${r.shared.baseKind} base, ${r.shared.donorKind} donor): ${c.identical} identical, ${c['space-marker']} by space marker, ${c['byte-encoding']} by byte encoding, ${c.byte} byte tokens${r.shared.capped ? `; ${r.shared.capped} left out by --max-shared` : ''}`,
    '',
  ];
  const rows = [['stage', 'outcome', 'residual before → after', 'candidates', 'blended', 'untrained rows', 'PPL ratio']];
  for (const s of r.stages) {
    rows.push([
      s.stage,
      s.outcome + (s.reason ? ` (${s.reason})` : ''),
      s.alignment ? `${s.alignment.residualBefore.toFixed(4)} → ${s.alignment.residualAfter.toFixed(4)}` : '',
      s.candidates !== undefined ? String(s.candidates) : '',
      s.blended !== undefined ? String(s.blended) : '',
      s.untrained ? `${s.untrained.rows} (${s.untrained.rule}${s.untrained.replaced ? `, ${s.untrained.replaced} replaced` : ''})` : '',
      s.pplRatio !== undefined ? s.pplRatio.toFixed(4) : '',
    ]);
  }
  lines.push(table(rows), '');
  const f = r.final;
  lines.push(
    `final: perplexity ${f.perplexity.toFixed(3)} vs base ${f.basePerplexity.toFixed(3)} (ratio ${f.pplRatio.toFixed(4)}); symmetric KL ${f.kl.symmetric.toExponential(3)} nats ` +
      `(KL(base‖merged) ${f.kl.forward.toExponential(3)}, KL(merged‖base) ${f.kl.reverse.toExponential(3)}; ${f.kl.topK ? `top-${f.kl.topK}` : 'exact'}, ${f.kl.positions} positions); top-1 agreement ${(100 * f.top1Agreement).toFixed(1)}%`,
  );
  if (r.search) {
    const s = r.search;
    lines.push(
      `search: ${s.trials} trials (seed ${s.seed}), best trial ${s.bestTrial}; Pareto front (lowest PPL ratio, highest symmetric KL): trials ${s.pareto.join(', ')}; ` +
        `${s.trialsPerMinute.toFixed(1)} trials/min (${s.forwards} forward passes, ${s.cachedHidden} scored from cached hidden states); stats/, pareto.json, best.json written`,
    );
  }
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines;
}

export function registerTransplant(program: Command): void {
  const d = DEFAULT_TRANSPLANT_PARAMS;
  const command = helpStyle(program.command('transplant'))
    .description(
      "Blend a donor model's token embeddings (and lm_head) into a base model of another architecture, width and vocabulary: " +
        'shared vocabulary, Procrustes + Umeyama alignment, row blending, a perplexity guard that rolls back a stage that hurts the base.',
    )
    .requiredOption('--base <dir>', 'model that receives rows (its config, tokenizer and tensor names are the output’s)')
    .requiredOption('--donor <dir>', 'model the rows come from (any architecture with model.embed_tokens, and lm_head when untied)')
    .requiredOption('--out <dir>', 'output model folder (written atomically)')
    .option('--prompts <file>', 'the guard’s text, one prompt per line (default: a built-in English set)')
    .option('--ppl-cap <x>', 'largest accepted perplexity ratio candidate ÷ base; a stage above it is rolled back', '3.0')
    .option('--target-emb-frac <f>', 'share of the candidate embedding rows blended', String(d.emb.targetFrac))
    .option('--alpha-cap-emb <a>', 'largest blend weight of an embedding row', String(d.emb.alphaCap))
    .option('--alpha-floor-emb <a>', 'smallest blend weight of an embedding row', String(d.emb.alphaFloor))
    .option('--min-tau-emb <c>', 'smallest cosine of a candidate embedding row', String(d.emb.minTau))
    .option('--target-head-rows <n>', 'lm_head rows blended at most', String(d.head.targetRows))
    .option('--alpha-cap-head <a>', 'largest blend weight of an lm_head row', String(d.head.alphaCap))
    .option('--alpha-floor-head <a>', 'smallest blend weight of an lm_head row', String(d.head.alphaFloor))
    .option('--min-tau-head <c>', 'smallest cosine of a candidate lm_head row', String(d.head.minTau))
    .option('--soft-clip', 'soft-clip the norms of donor rows that replace untrained rows (on unless --no-soft-clip)', true)
    .option('--no-soft-clip', 'do not soft-clip')
    .option('--untrained-rows <rule>', 'rows the base never trained: skip (leave them), donor (take the donor row), blend (treat like any row)', d.untrainedRows)
    .option('--max-shared <n>', 'use at most N shared tokens (lowest base ids first)')
    .option('--kl-topk <k>', 'KL over the base’s K most likely tokens plus the rest as one bucket', '512')
    .option('--kl-positions <all|tail:N>', 'positions of each prompt KL is measured on', 'tail:8')
    .option('--trials <n>', 'search: trial 1 uses the parameters given, the others are drawn around them; the best is written', '1')
    .option('--seed <n>', 'seed of the search', '0')
    .option('--save-topk <k>', 'with --trials: also write the K best trials as models under OUT/topk/', '0');
  addOutputFlags(command, { threads: true, json: 'print the report as JSON' })
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Method: tokens whose texts match (SentencePiece ▁ and byte-level Ġ/byte tokens brought to the same
bytes; special and added tokens left out) pair base and donor rows. Both sides are mean-centred on
the pairs of trained rows; the donor is rotated by the polar factor of the cross-covariance (the
rectangular one when the widths differ), scaled by Umeyama's factor and shifted to the base mean.
A stage blends the pairs whose mapped donor row has a centred cosine ≥ tau with the base row, the
best share of them, each with a weight rising with the cosine from the floor to the cap, at the
base row's norm. The guard compares the candidate's perplexity on the prompts with the base's: a
stage above --ppl-cap is rolled back (and after a rolled-back embedding stage, lm_head is skipped).
Tied models have no lm_head stage. Untrained rows: padding rows beyond the tokenizer and rows still
within 5σ of N(0, initializer_range²)'s norm.
Search (--trials N): trial 1 uses the parameters given, the others draw every blend parameter
uniformly around them (seeded). Each trial's JSON goes to OUT/stats/, the Pareto front (lower
perplexity ratio, higher symmetric KL) to pareto.json, and the best — the highest symmetric KL of
what the guard kept — to best.json; the model written is the best trial's. The base's hidden states and those of each embedding table are computed once and reused.

Examples:
  loraforge transplant --base ./Qwen2.5-0.5B --donor ./Llama-3.2-1B --out ./qwen-with-llama-rows
  loraforge transplant --base ./base --donor ./donor --out ./merged --prompts my-domain.txt --ppl-cap 1.5 --untrained-rows donor --json
${HUB_IDS_HELP}`,
    )
    .action(async (flags: TransplantFlags) => {
      const threads = parseIntFlag('--threads', flags.threads, 1);
      const rules: UntrainedRule[] = ['skip', 'donor', 'blend'];
      if (!rules.includes(flags.untrainedRows as UntrainedRule)) throw new UsageError(`--untrained-rows must be one of ${rules.join(', ')}, got "${flags.untrainedRows}"`);
      const unit = (name: string, v: string) => parseFloatFlag(name, v, [0, 1]);
      const params = {
        emb: {
          targetFrac: parseFloatFlag('--target-emb-frac', flags.targetEmbFrac, [0, 1]),
          alphaCap: unit('--alpha-cap-emb', flags.alphaCapEmb),
          alphaFloor: unit('--alpha-floor-emb', flags.alphaFloorEmb),
          minTau: parseFloatFlag('--min-tau-emb', flags.minTauEmb, [-1, 1]),
        },
        head: {
          targetRows: parseIntFlag('--target-head-rows', flags.targetHeadRows, 0),
          alphaCap: unit('--alpha-cap-head', flags.alphaCapHead),
          alphaFloor: unit('--alpha-floor-head', flags.alphaFloorHead),
          minTau: parseFloatFlag('--min-tau-head', flags.minTauHead, [-1, 1]),
        },
        softClip: flags.softClip,
        untrainedRows: flags.untrainedRows as UntrainedRule,
      };
      await checkOutFlag(flags.out, [flags.base, flags.donor, ...(flags.prompts ? [flags.prompts] : [])], flags.force === true);
      const progress = lazyProgress('transplant', Boolean(flags.quiet || flags.json));
      const report = await transplantEmbeddings({
        hub: hubOptions(flags),
        base: flags.base,
        donor: flags.donor,
        out: flags.out,
        prompts: flags.prompts,
        pplCap: parseFloatFlag('--ppl-cap', flags.pplCap, [1, Infinity]),
        params,
        maxShared: parseIntFlag('--max-shared', flags.maxShared, 1),
        klTopK: parseIntFlag('--kl-topk', flags.klTopk, 1),
        klPositions: parseKlPositions(flags.klPositions),
        trials: parseIntFlag('--trials', flags.trials, 1),
        seed: parseIntFlag('--seed', flags.seed, 0),
        saveTopK: parseIntFlag('--save-topk', flags.saveTopk, 0),
        overwrite: flags.force ?? false,
        backend: await getBackend({ threads }),
        onProgress: progress.tick,
      }).finally(progress.done);
      printReport(report, flags.json, summaryLines);
    });
}
