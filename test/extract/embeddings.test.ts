import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLora, type ExtractOptions } from '../../src/extract/index.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINY_LLAMA, llamaBase, llamaConfig, planted, product, relDiff, withDeltas, writePair, type Tensors } from '../helpers/extract.js';

let root: string;
let count = 0;
const sub = (name: string) => join(root, `${name}${count++}`);

const EMBED = 'model.embed_tokens.weight';
const HEAD = 'lm_head.weight';
const Q0 = 'model.layers.0.self_attn.q_proj.weight';
const untied = { ...TINY_LLAMA };
const tied = { ...TINY_LLAMA, tied: true };

// B changes the embeddings (rank 2), the head (rank 3) and one q_proj (rank 2); A is the base.
const embedDelta = planted(50, 64, [0.4, 0.2], 7);
const headDelta = planted(50, 64, [0.3, 0.2, 0.1], 8);
const qDelta = planted(64, 64, [0.3, 0.2], 9);

function models(shape: typeof TINY_LLAMA): { a: Tensors; b: Tensors } {
  const a = llamaBase(shape, 3);
  const deltas: Record<string, Float32Array> = { [EMBED]: embedDelta, [Q0]: qDelta };
  if (!shape.tied) deltas[HEAD] = headDelta;
  return { a, b: withDeltas(a, deltas) };
}

let untiedPair: { a: string; b: string };
let tiedPair: { a: string; b: string };
let vocabPair: { a: string; b: string };

before(async () => {
  root = await makeTempDir('loraforge-embed-');
  const u = models(untied);
  untiedPair = await writePair(sub('untied'), u.a, u.b, { dtype: 'F32', config: llamaConfig(untied) });
  const t = models(tied);
  tiedPair = await writePair(sub('tied'), t.a, t.b, { dtype: 'F32', config: llamaConfig(tied) });
  // B added two tokens: two more rows in the embeddings and the head
  const grow = (x: { shape: number[]; data: Float32Array }) => {
    const data = new Float32Array((x.shape[0] + 2) * x.shape[1]);
    data.set(x.data);
    data.fill(0.01, x.data.length);
    return { shape: [x.shape[0] + 2, x.shape[1]], data };
  };
  vocabPair = await writePair(sub('vocab'), u.a, { ...u.b, [EMBED]: grow(u.b[EMBED]), [HEAD]: grow(u.b[HEAD]) }, { dtype: 'F32', config: llamaConfig(untied) });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function run(pair: { a: string; b: string }, extra: Partial<ExtractOptions>) {
  const out = sub('out');
  return { out, report: extractLora({ modelA: pair.a, modelB: pair.b, out, policy: { mode: 'energy', energy: 0.9999, maxRank: 16 }, ...extra }) };
}

async function config(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
}

describe('embeddings and LM head', () => {
  it('skip (default): not extracted, reported as differing', async () => {
    const { report } = run(untiedPair, {});
    const r = await report;
    assert.deepEqual(r.tensors.map((t) => t.name), [Q0]);
    assert.deepEqual(
      r.nonTargetDiffering.map((d) => [d.name, d.saved, d.reason]),
      [EMBED, HEAD].map((n) => [n, false, 'embeddings are skipped (--embeddings skip)']),
    );
  });

  it('lora: PEFT embedding LoRA for embed_tokens, an ordinary LoRA for lm_head', async () => {
    const { out, report } = run(untiedPair, { embeddings: 'lora' });
    const r = await report;
    assert.deepEqual(Object.fromEntries(r.tensors.map((t) => [t.name, [t.kind, t.rank]])), {
      [EMBED]: ['embedding', 2],
      [Q0]: ['linear', 2],
      [HEAD]: ['linear', 3],
    });
    const file = await openSafetensors(join(out, 'adapter_model.safetensors'));
    try {
      assert.deepEqual(file.info('base_model.model.model.embed_tokens.lora_embedding_A').shape, [2, 50]);
      assert.deepEqual(file.info('base_model.model.model.embed_tokens.lora_embedding_B').shape, [64, 2]);
      assert.deepEqual(file.info('base_model.model.lm_head.lora_A.weight').shape, [3, 64]);
    } finally {
      await file.close();
    }
    const adapter = await openPeftAdapter(out);
    try {
      for (const [name, truth] of [
        ['model.embed_tokens', embedDelta],
        ['lm_head', headDelta],
      ] as const) {
        const info = adapter.module(name);
        const m = await adapter.load(name);
        const rebuilt = product(m.B.data, m.A.data, info.outFeatures, info.rank, info.inFeatures, info.scaling);
        assert.ok(relDiff(rebuilt, truth) < 1e-4, name);
      }
    } finally {
      await adapter.close();
    }
    assert.equal((await config(out)).ensure_weight_tying, undefined, 'untied models need no tying');
  });

  it('tied embeddings: handled once, through embed_tokens, with ensure_weight_tying', async () => {
    for (const mode of ['lora', 'full'] as const) {
      const { out, report } = run(tiedPair, { embeddings: mode });
      const r = await report;
      assert.equal(r.embeddings.tied, true);
      const cfg = await config(out);
      assert.equal(cfg.ensure_weight_tying, true, mode);
      if (mode === 'lora') {
        assert.deepEqual(r.tensors.map((t) => t.name).sort(), [EMBED, Q0].sort());
        assert.deepEqual(cfg.target_modules, ['embed_tokens', 'q_proj']);
      } else {
        assert.deepEqual(r.tensors.map((t) => t.name), [Q0]);
        assert.deepEqual(cfg.modules_to_save, ['embed_tokens']);
        assert.deepEqual(r.nonTargetDiffering.map((d) => [d.name, d.saved]), [[EMBED, true]]);
      }
    }
  });

  it('full: B’s embeddings and head saved whole (modules_to_save)', async () => {
    const { out, report } = run(untiedPair, { embeddings: 'full' });
    await report;
    const adapter = await openPeftAdapter(out);
    try {
      assert.deepEqual(adapter.config.modules_to_save, ['embed_tokens', 'lm_head']);
      const b = models(untied).b;
      assert.deepEqual([...(await adapter.readFull(EMBED))], [...b[EMBED].data]);
      assert.deepEqual([...(await adapter.readFull(HEAD))], [...b[HEAD].data]);
    } finally {
      await adapter.close();
    }
  });

  it('a vocabulary mismatch is an error unless --embeddings full, which saves B’s matrices as they are', async () => {
    for (const mode of ['skip', 'lora'] as const) {
      const { out, report } = run(vocabPair, { embeddings: mode });
      await assert.rejects(report, (err: Error) => {
        assert.match(err.message, /vocabularies differ/);
        assert.match(err.message, /50 rows in model A but 52 in model B/);
        assert.match(err.message, /--embeddings full/);
        assert.match(err.message, /resize_token_embeddings\(52\)/);
        return true;
      });
      assert.ok(!(await readdir(root)).some((n) => n.includes(out.slice(root.length + 1))));
    }
    const { out, report } = run(vocabPair, { embeddings: 'full' });
    const r = await report;
    assert.deepEqual(r.embeddings, { mode: 'full', tied: false, vocabA: 50, vocabB: 52 });
    assert.ok(r.notes.some((n) => /resize the base model's token embeddings to 52/.test(n)));
    assert.deepEqual(r.nonTargetDiffering.map((d) => [d.name, d.relChange, d.shape]), [
      [EMBED, null, [52, 64]],
      [HEAD, null, [52, 64]],
    ]);
    const adapter = await openPeftAdapter(out);
    try {
      const embed = await adapter.readFull(EMBED);
      assert.equal(embed.length, 52 * 64);
      assert.equal(embed[50 * 64], Math.fround(0.01), "the added rows are kept");
    } finally {
      await adapter.close();
    }
  });
});
