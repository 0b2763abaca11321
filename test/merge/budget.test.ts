/**
 * The merge memory rule (executor.ts mergeBudget): whatever the method and the number of models,
 * the tensors being read and merged never cost more than one merge of the largest by default (or
 * what maxMemory allows), and a method cannot take more working arrays than it declares (or the
 * budget would not bound it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeBudget } from '../../src/merge/executor.js';
import { MERGE_METHODS, type MergeMethodDef } from '../../src/merge/methods.js';
import type { PlannedTensor } from '../../src/merge/plan.js';
import { runMethod, scratchArrays } from '../../src/merge/run-method.js';
import { BufferPool } from '../../src/pipeline/buffer-pool.js';
import { prefetch } from '../../src/pipeline/prefetch.js';

/** A 1B-like layer sequence: large, small and tiny tensors, `inputs` models each. */
function plan(layers: number, inputs: number): PlannedTensor[] {
  const sizes = [16, 4, 1, 1, 4, 64, 64, 64, 0.001];
  return Array.from({ length: layers }, (_, l) => sizes.map((mib, i) => ({ name: `l${l}.t${i}`, inputs: Array.from({ length: inputs }, (_, m) => ({ model: m, tensor: '' })), context: { numel: Math.ceil(mib * 2 ** 18) } }) as unknown as PlannedTensor)).flat();
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/**
 * Most bytes loading at once when every load that may start does before its tensor is written (a
 * slow sink; depth 4, as many loads as four workers would take, were it not for the budget), and
 * whether two loads were ever in flight together.
 */
async function loadsInFlight(tensors: PlannedTensor[], budget: ReturnType<typeof mergeBudget>): Promise<{ most: number; overlapped: boolean }> {
  let inFlight = 0;
  let count = 0;
  let most = 0;
  let overlapped = false;
  for await (const { item } of prefetch(tensors, async (t) => {
    inFlight += budget.cost(t);
    count++;
    most = Math.max(most, inFlight);
    overlapped ||= count > 1;
    await tick();
    return t;
  }, { depth: 4, budget })) {
    for (let i = 0; i < 10; i++) await tick();
    inFlight -= budget.cost(item);
    count--;
  }
  return { most, overlapped };
}

describe('merge memory budget', () => {
  for (const [method, inputs] of [['linear', 2], ['ties', 3], ['della', 3], ['model_stock', 4]] as const) {
    it(`${method}, ${inputs} models: loads in flight stay within one merge of the largest, for a slow sink`, async () => {
      const tensors = plan(3, inputs);
      const budget = mergeBudget(tensors, scratchArrays(MERGE_METHODS[method]));
      const largest = Math.max(...tensors.map(budget.cost));
      assert.equal(budget.bytes, largest);
      const { most, overlapped } = await loadsInFlight(tensors, budget);
      assert.ok(most <= largest, `${most} bytes in flight, budget ${largest}`);
      assert.ok(overlapped, 'small tensors were read and merged several at a time');
    });
  }

  it('maxMemory lets two merges of the largest tensor run at once, and no more', async () => {
    const tensors = plan(3, 3);
    const scratch = scratchArrays(MERGE_METHODS.ties);
    const one = mergeBudget(tensors, scratch);
    const largest = Math.max(...tensors.map(one.cost));
    const output = Math.max(...tensors.map((t) => t.context.numel * 4));
    const two = mergeBudget(tensors, scratch, 2 * largest + output);
    assert.equal(two.bytes, 2 * largest);
    const { most } = await loadsInFlight(tensors, two);
    assert.ok(most > largest && most <= 2 * largest, `${most} bytes in flight`);
    // less than one merge: one still runs, alone
    const tiny = mergeBudget(tensors, scratch, 1);
    assert.equal((await loadsInFlight(tensors, tiny)).most, largest);
  });

  it('by default two merges of the largest tensor run at once when workers can and they fit in a quarter of the available memory, else one', () => {
    const tensors = plan(3, 3);
    const scratch = scratchArrays(MERGE_METHODS.ties);
    const one = mergeBudget(tensors, scratch);
    const largest = Math.max(...tensors.map(one.cost));
    const output = Math.max(...tensors.map((t) => t.context.numel * 4));
    const plenty = 4 * (2 * largest + output);
    assert.equal(mergeBudget(tensors, scratch, undefined, { workers: 2, availableBytes: plenty }).bytes, 2 * largest);
    assert.equal(mergeBudget(tensors, scratch, undefined, { workers: 2, availableBytes: plenty - 1 }).bytes, largest);
    assert.equal(mergeBudget(tensors, scratch, undefined, { workers: 1, availableBytes: 100 * plenty }).bytes, largest);
    // an explicit budget wins over the room
    assert.equal(mergeBudget(tensors, scratch, largest + output, { workers: 2, availableBytes: 100 * plenty }).bytes, largest);
  });

  it('ties takes no working arrays of the tensor\'s size (its sums run chunk by chunk)', () => {
    assert.equal(scratchArrays(MERGE_METHODS.ties), 0);
    assert.equal(scratchArrays(MERGE_METHODS.dare_ties), 0);
    assert.equal(scratchArrays(MERGE_METHODS.della), 1);
  });

  it('a method taking more working arrays than it declares fails, and lent arrays are used first', () => {
    const context = { tensor: 't', numel: 1 << 18, shape: [1 << 18], base: 0, params: {}, inputParams: [{}], inputLabels: ['a'] };
    const greedy = { ...MERGE_METHODS.linear, scratch: 1, merge: (_c, inputs, env) => (env.scratch(), env.scratch(), inputs[0]) } satisfies MergeMethodDef;
    assert.throws(() => runMethod(greedy, context, [new Float32Array(1 << 18)], 0, new BufferPool()), /linear takes more working arrays than the 1 it declares/);
    const pool = new BufferPool();
    const one = { ...greedy, merge: (_c, inputs, env) => (env.scratch(), inputs[0]) } satisfies MergeMethodDef;
    runMethod(one, context, [new Float32Array(1 << 18)], 0, pool, [new Float32Array(1 << 18)]);
    assert.equal(pool.heldBytes, 0, 'the lent array served');
  });
});
