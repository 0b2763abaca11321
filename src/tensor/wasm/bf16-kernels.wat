;; SIMD kernels for the hot loops V8 cannot vectorise: widening bf16 to f32 (a 16-bit shift) with its finite check,
;; forming Δ = B − A with its squared norms, and rounding f32 to bf16. Built into bf16-kernels.ts by scripts/build-wasm.mjs.
;;
;; The module owns a fixed 2 MiB memory (never grown, so JS views of it stay valid); callers copy
;; their data in and out in chunks. Element counts must be multiples of 8 (callers do the tail).
(module
  (memory (export "memory") 32 32)

  ;; Σ(B − A)² and ΣA² of the elements seen since the last reset, summed in f64
  (global $deltaSq (export "deltaSq") (mut f64) (f64.const 0))
  (global $baseSq (export "baseSq") (mut f64) (f64.const 0))

  (func (export "reset")
    (global.set $deltaSq (f64.const 0))
    (global.set $baseSq (f64.const 0)))

  ;; out[i] = f32(bf16 in[i]) for i < n; returns 1 when every value is finite, else 0. A bf16 is
  ;; NaN or ±Inf iff its exponent bits (0x7f80) are all set, and only then does adding 0x0080 to
  ;; them carry into bit 15: OR-ing those sums costs three integer ops per eight elements, where a
  ;; second pass over the f32 output would cost as much as the decoding.
  (func (export "decodeBf16") (param $in i32) (param $out i32) (param $n i32) (result i32)
    (local $end i32) (local $v v128) (local $acc v128)
    (local.set $end (i32.add (local.get $in) (i32.shl (local.get $n) (i32.const 1))))
    (local.set $acc (v128.const i32x4 0 0 0 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $in) (local.get $end)))
        (local.set $v (v128.load (local.get $in)))
        (local.set $acc (v128.or (local.get $acc)
          (i16x8.add (v128.and (local.get $v) (i16x8.splat (i32.const 0x7f80))) (i16x8.splat (i32.const 0x0080)))))
        (v128.store (local.get $out) (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $v)) (i32.const 16)))
        (v128.store offset=16 (local.get $out) (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $v)) (i32.const 16)))
        (local.set $in (i32.add (local.get $in) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (br $next)))
    (i32.eqz (i16x8.bitmask (local.get $acc))))

  ;; out[i] = f32(bf16 b[i]) − f32(bf16 a[i]) for i < n; adds the squares to deltaSq and baseSq.
  ;; Squares are summed in f32 over one group of eight, then in f64: relative error ~1e-7.
  (func (export "deltaBf16") (param $a i32) (param $b i32) (param $out i32) (param $n i32)
    (local $end i32)
    (local $va v128) (local $vb v128)
    (local $alo v128) (local $ahi v128) (local $dlo v128) (local $dhi v128)
    (local $dacc v128) (local $aacc v128)
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 1))))
    (local.set $dacc (f64x2.splat (f64.const 0)))
    (local.set $aacc (f64x2.splat (f64.const 0)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
        (local.set $va (v128.load (local.get $a)))
        (local.set $vb (v128.load (local.get $b)))
        (local.set $alo (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $va)) (i32.const 16)))
        (local.set $ahi (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $va)) (i32.const 16)))
        (local.set $dlo (f32x4.sub (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $vb)) (i32.const 16)) (local.get $alo)))
        (local.set $dhi (f32x4.sub (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $vb)) (i32.const 16)) (local.get $ahi)))
        (v128.store (local.get $out) (local.get $dlo))
        (v128.store offset=16 (local.get $out) (local.get $dhi))
        ;; the eight squares, pairwise in f32, then into the f64 accumulators
        (local.set $dlo (f32x4.add (f32x4.mul (local.get $dlo) (local.get $dlo)) (f32x4.mul (local.get $dhi) (local.get $dhi))))
        (local.set $dacc (f64x2.add (local.get $dacc)
          (f64x2.add (f64x2.promote_low_f32x4 (local.get $dlo))
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $dlo) (local.get $dlo))))))
        (local.set $alo (f32x4.add (f32x4.mul (local.get $alo) (local.get $alo)) (f32x4.mul (local.get $ahi) (local.get $ahi))))
        (local.set $aacc (f64x2.add (local.get $aacc)
          (f64x2.add (f64x2.promote_low_f32x4 (local.get $alo))
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $alo) (local.get $alo))))))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (br $next)))
    (global.set $deltaSq (f64.add (global.get $deltaSq)
      (f64.add (f64x2.extract_lane 0 (local.get $dacc)) (f64x2.extract_lane 1 (local.get $dacc)))))
    (global.set $baseSq (f64.add (global.get $baseSq)
      (f64.add (f64x2.extract_lane 0 (local.get $aacc)) (f64x2.extract_lane 1 (local.get $aacc))))))
;; bf16 bits of f32 bits x: round to nearest, ties to even (adding 0x7fff plus the lowest kept bit;
  ;; a carry into the exponent is right, the largest finite values round to inf); NaN stays a
  ;; quiet NaN. i32 addition wraps like the unsigned arithmetic this needs.
  (func $roundBf16 (param $x v128) (result v128)
    (v128.bitselect
      (v128.or (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 0x40)))
      (i32x4.shr_u
        (i32x4.add
          (i32x4.add (local.get $x) (i32x4.splat (i32.const 0x7fff)))
          (v128.and (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 1))))
        (i32.const 16))
      (i32x4.gt_u
        (v128.and (local.get $x) (i32x4.splat (i32.const 0x7fffffff)))
        (i32x4.splat (i32.const 0x7f800000)))))

  ;; out[i] = bf16(in[i]) for i < n (f32 in, bf16 out)
  (func (export "encodeBf16") (param $in i32) (param $out i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $in) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $in) (local.get $end)))
        (v128.store (local.get $out)
          (i16x8.narrow_i32x4_u
            (call $roundBf16 (v128.load (local.get $in)))
            (call $roundBf16 (v128.load offset=16 (local.get $in)))))
        (local.set $in (i32.add (local.get $in) (i32.const 32)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))))
)
