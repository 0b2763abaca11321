/**
 * What text a vocabulary entry stands for, as bytes, so two tokenizers of different kinds can be
 * matched token by token: SentencePiece writes a space as `▁` and unknown bytes as `<0xNN>`
 * (byte fallback); byte-level BPE (GPT-2, Qwen, Llama 3) writes every byte as one printable
 * character (`Ġ` is the space). Both are brought back to the bytes the token decodes to.
 */

export type VocabKind = 'sentencepiece' | 'byte-level' | 'plain';

/** GPT-2's bytes_to_unicode, inverted: the printable character of each byte → the byte. */
const BYTE_OF_CHAR: Map<string, number> = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Map<string, number>();
  const taken = new Set(printable);
  for (const b of printable) map.set(String.fromCharCode(b), b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (taken.has(b)) continue;
    map.set(String.fromCharCode(256 + n), b);
    n++;
  }
  return map;
})();

/** The kind of a tokenizer.json, from its decoder (how it turns tokens back into text). */
export function vocabKind(tokenizerJson: Record<string, unknown>): VocabKind {
  const text = JSON.stringify(tokenizerJson['decoder'] ?? null) + JSON.stringify(tokenizerJson['pre_tokenizer'] ?? null);
  if (text.includes('"ByteLevel"')) return 'byte-level';
  if (text.includes('Metaspace') || text.includes('\u2581') || JSON.stringify(tokenizerJson['normalizer'] ?? null).includes('\u2581')) return 'sentencepiece';
  return 'plain';
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

export interface Surface {
  /** the bytes the token decodes to, as a binary (latin1) string usable as a map key */
  bytes: string;
  /** a SentencePiece byte-fallback token (`<0xNN>`) */
  byteToken: boolean;
}

/** The surface of one token of a vocabulary of `kind`; undefined when it stands for no fixed bytes. */
export function tokenSurface(token: string, kind: VocabKind): Surface | undefined {
  if (kind === 'byte-level') {
    let out = '';
    for (const ch of token) {
      const b = BYTE_OF_CHAR.get(ch);
      if (b === undefined) return undefined; // not a byte-level piece (should not occur in the BPE vocab)
      out += String.fromCharCode(b);
    }
    return { bytes: out, byteToken: false };
  }
  if (kind === 'sentencepiece') {
    const m = BYTE_TOKEN.exec(token);
    if (m) return { bytes: String.fromCharCode(parseInt(m[1]!, 16)), byteToken: true };
    return { bytes: Buffer.from(token.replaceAll('\u2581', ' '), 'utf8').toString('latin1'), byteToken: false };
  }
  return { bytes: Buffer.from(token, 'utf8').toString('latin1'), byteToken: false };
}
