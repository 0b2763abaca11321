/**
 * The vocabulary two models share: pairs of (base id, donor id) whose tokens stand for the same
 * bytes, whatever the tokenizer kinds (see surface.ts). Special and added tokens are left out on
 * both sides: they mean what each model was trained to make of them, not their text.
 */
import { join } from 'node:path';
import { readJsonFile } from '../io/json-file.js';
import { tokenSurface, vocabKind, type VocabKind } from './surface.js';
import { vocabEntries } from '../tokenizer/vocab-entries.js';

/** How a pair matched: the same token string; the same text under another space marker (▁ vs Ġ); a byte-fallback token on one side; or the same non-ASCII text in each tokenizer's own byte encoding. */
export type MatchKind = 'identical' | 'space-marker' | 'byte' | 'byte-encoding';

export interface SharedToken {
  baseId: number;
  donorId: number;
  kind: MatchKind;
}

export interface SharedVocabulary {
  pairs: SharedToken[];
  baseKind: VocabKind;
  donorKind: VocabKind;
  /** tokens compared on each side (specials and added tokens excluded) */
  baseTokens: number;
  donorTokens: number;
  counts: Record<MatchKind, number>;
  /** pairs dropped by maxShared */
  capped: number;
}

interface Vocab {
  kind: VocabKind;
  /** id → token, regular vocabulary only */
  tokens: Map<number, string>;
}

async function readVocab(folder: string): Promise<Vocab> {
  const path = join(folder, 'tokenizer.json');
  const json = (await readJsonFile(path)) as Record<string, unknown>;
  const added = new Set(((json['added_tokens'] as Array<{ id: number }> | undefined) ?? []).map((t) => t.id));
  const tokens = new Map<number, string>();
  for (const [token, id] of vocabEntries(json, path)) if (!added.has(id)) tokens.set(id, token);
  return { kind: vocabKind(json), tokens };
}

function matchKind(baseToken: string, donorToken: string, baseByte: boolean, donorByte: boolean): MatchKind {
  if (baseToken === donorToken) return 'identical';
  if (baseByte || donorByte) return 'byte';
  const norm = (t: string) => t.replaceAll('\u2581', ' ').replaceAll('\u0120', ' ');
  return norm(baseToken) === norm(donorToken) ? 'space-marker' : 'byte-encoding';
}

/** Pairs of tokens of the two folders' tokenizer.json files that decode to the same bytes, by base id; at most maxShared. */
export async function sharedVocabulary(baseFolder: string, donorFolder: string, maxShared = Infinity): Promise<SharedVocabulary> {
  const base = await readVocab(baseFolder);
  const donor = await readVocab(donorFolder);
  // donor bytes → donor id; a regular token wins over a byte-fallback token of the same byte
  const donorBy = new Map<string, { id: number; byteToken: boolean }>();
  for (const [id, token] of donor.tokens) {
    const s = tokenSurface(token, donor.kind);
    if (!s || s.bytes === '') continue;
    const prior = donorBy.get(s.bytes);
    if (!prior || (prior.byteToken && !s.byteToken) || (prior.byteToken === s.byteToken && id < prior.id)) donorBy.set(s.bytes, { id, byteToken: s.byteToken });
  }
  const all: SharedToken[] = [];
  const seenBytes = new Map<string, number>();
  const baseIds = [...base.tokens.keys()].sort((a, b) => a - b);
  for (const id of baseIds) {
    const token = base.tokens.get(id)!;
    const s = tokenSurface(token, base.kind);
    if (!s || s.bytes === '') continue;
    const d = donorBy.get(s.bytes);
    if (!d) continue;
    // two base tokens with the same bytes (a byte token and a character): keep the regular one
    const prior = seenBytes.get(s.bytes);
    if (prior !== undefined) {
      if (!s.byteToken) continue;
    }
    seenBytes.set(s.bytes, id);
    all.push({ baseId: id, donorId: d.id, kind: matchKind(token, donor.tokens.get(d.id)!, s.byteToken, d.byteToken) });
  }
  const pairs = all.slice(0, Number.isFinite(maxShared) ? maxShared : all.length);
  const counts: Record<MatchKind, number> = { identical: 0, 'space-marker': 0, byte: 0, 'byte-encoding': 0 };
  for (const p of pairs) counts[p.kind]++;
  return { pairs, baseKind: base.kind, donorKind: donor.kind, baseTokens: base.tokens.size, donorTokens: donor.tokens.size, counts, capped: all.length - pairs.length };
}
