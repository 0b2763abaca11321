;; SIMD kernels for eval's full-vocabulary scoring: the log-sum-exp of a row of logits and the KL terms
;; of two rows, exp and every sum in f64 (V8 runs Math.exp one element at a time, ~26 ns each: 4.4 s
;; of a 7.7 s evaluation). Built into softmax-kernels.ts by scripts/build-wasm.mjs.
;;
;; Rows are f32 in the module's memory (callers grow it to fit); element counts must be multiples of
;; 4: callers pad a row with -Inf, which both kernels count as exp(-Inf) = 0.
(module
  (memory (export "memory") 1)

  ;; the second sum of the last sumExp
  (global $weighted (export "weighted") (mut f64) (f64.const 0))

  ;; the largest of the n f32 at $at (NaN if one is NaN)
  (func (export "maxF32") (param $at i32) (param $n i32) (result f32)
    (local $end i32) (local $m v128)
    (local.set $end (i32.add (local.get $at) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $m (f32x4.splat (f32.const -inf)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $m (f32x4.max (local.get $m) (v128.load (local.get $at))))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next)))
    (f32.max
      (f32.max (f32x4.extract_lane 0 (local.get $m)) (f32x4.extract_lane 1 (local.get $m)))
      (f32.max (f32x4.extract_lane 2 (local.get $m)) (f32x4.extract_lane 3 (local.get $m)))))

  ;; Σ exp(x[i] − shift) over the n f32 at $x, in f64, returned; and Σ exp(x[i] − shift)·((x[i] − shift) − (y[i] − yShift))
  ;; over the same i (the KL sum when shift and yShift are the two rows' log-sum-exps) left in $weighted; $y = $x
  ;; is allowed. Terms where x[i] − shift < -708 count as 0 (so do the -Inf pads).
  ;;
  ;; exp(d), d ≤ 708: d = k·ln2 + r, |r| ≤ ln2/2, exp(r) by its Taylor series to r^10 (truncation < 3e-13
  ;; relative) evaluated by Estrin's scheme (a dependency chain of 7 operations, not Horner's 20), 2^k built
  ;; in the exponent bits (garbage for d < -708, where 2^k is no longer a normal f64: masked to 0, exp(-708)
  ;; being below f64's resolution of a sum that holds exp(0) = 1). Written out twice, inline, for the
  ;; low and high pair of four elements: V8 does not inline wasm calls, and a call per pair, or one pair
  ;; an iteration, cost 30-60% more (6.0 and 5.2 ns an element against 3.8).
  (func (export "sumExp") (param $x i32) (param $y i32) (param $n i32) (param $shift f64) (param $yShift f64) (result f64)
    (local $end i32) (local $d v128) (local $dy v128) (local $drop v128) (local $e v128)
    (local $kd v128) (local $k v128) (local $r v128) (local $r2 v128) (local $r4 v128)
    (local $acc v128) (local $wacc v128)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $acc (f64x2.splat (f64.const 0)))
    (local.set $wacc (f64x2.splat (f64.const 0)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $x))) (f64x2.splat (local.get $shift))))
        (local.set $dy (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $y))) (f64x2.splat (local.get $yShift))))
        (local.set $drop (f64x2.lt (local.get $d) (f64x2.splat (f64.const -708))))
        ;; k = round(d / ln2) by adding 1.5·2^52, whose ulp is 1: the sum's low mantissa bits then hold k
        (local.set $kd (f64x2.add (f64x2.mul (local.get $d) (f64x2.splat (f64.const 1.4426950408889634)))
          (f64x2.splat (f64.const 6755399441055744))))
        (local.set $k (f64x2.sub (local.get $kd) (f64x2.splat (f64.const 6755399441055744))))
        ;; ln2 split in two (fdlibm's ln2_hi has 32 bits, so k·ln2_hi is exact for |k| < 2^21)
        (local.set $r (f64x2.sub
          (f64x2.sub (local.get $d) (f64x2.mul (local.get $k) (f64x2.splat (f64.const 6.93147180369123816490e-01))))
          (f64x2.mul (local.get $k) (f64x2.splat (f64.const 1.90821492927058770002e-10)))))
        (local.set $r2 (f64x2.mul (local.get $r) (local.get $r)))
        (local.set $r4 (f64x2.mul (local.get $r2) (local.get $r2)))
        (local.set $e (f64x2.mul
          ;; Σ r^i / i!, i = 0..10, as ((1 + r) + (1/2! + r/3!)r²) + ((1/4! + r/5!) + (1/6! + r/7!)r²)r⁴
          ;; + ((1/8! + r/9!) + r²/10!)r⁸
          (f64x2.add
            (f64x2.add
              (f64x2.add (f64x2.add (f64x2.splat (f64.const 1)) (local.get $r))
                (f64x2.mul (f64x2.add (f64x2.splat (f64.const 0.5)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 1.6666666666666666e-01)))) (local.get $r2)))
              (f64x2.mul
                (f64x2.add
                  (f64x2.add (f64x2.splat (f64.const 4.1666666666666664e-02)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 8.333333333333333e-03))))
                  (f64x2.mul (f64x2.add (f64x2.splat (f64.const 1.388888888888889e-03)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 1.984126984126984e-04)))) (local.get $r2)))
                (local.get $r4)))
            (f64x2.mul
              (f64x2.add
                (f64x2.add (f64x2.splat (f64.const 2.48015873015873e-05)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 2.7557319223985893e-06))))
                (f64x2.mul (local.get $r2) (f64x2.splat (f64.const 2.755731922398589e-07))))
              (f64x2.mul (local.get $r4) (local.get $r4))))
          ;; 2^k: the bits of kd are those of 1.5·2^52 plus k, and 1.5·2^52 << 52 wraps to 0
          (i64x2.add (i64x2.shl (local.get $kd) (i32.const 52)) (i64x2.splat (i64.const 0x3ff0000000000000)))))
        (local.set $acc (f64x2.add (local.get $acc) (v128.andnot (local.get $e) (local.get $drop))))
        (local.set $wacc (f64x2.add (local.get $wacc)
          (v128.andnot (f64x2.mul (local.get $e) (f64x2.sub (local.get $d) (local.get $dy))) (local.get $drop))))
        ;; the same for elements 2 and 3
        (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $x))) (f64x2.splat (local.get $shift))))
        (local.set $dy (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $y))) (f64x2.splat (local.get $yShift))))
        (local.set $drop (f64x2.lt (local.get $d) (f64x2.splat (f64.const -708))))
        (local.set $kd (f64x2.add (f64x2.mul (local.get $d) (f64x2.splat (f64.const 1.4426950408889634)))
          (f64x2.splat (f64.const 6755399441055744))))
        (local.set $k (f64x2.sub (local.get $kd) (f64x2.splat (f64.const 6755399441055744))))
        (local.set $r (f64x2.sub
          (f64x2.sub (local.get $d) (f64x2.mul (local.get $k) (f64x2.splat (f64.const 6.93147180369123816490e-01))))
          (f64x2.mul (local.get $k) (f64x2.splat (f64.const 1.90821492927058770002e-10)))))
        (local.set $r2 (f64x2.mul (local.get $r) (local.get $r)))
        (local.set $r4 (f64x2.mul (local.get $r2) (local.get $r2)))
        (local.set $e (f64x2.mul
          (f64x2.add
            (f64x2.add
              (f64x2.add (f64x2.add (f64x2.splat (f64.const 1)) (local.get $r))
                (f64x2.mul (f64x2.add (f64x2.splat (f64.const 0.5)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 1.6666666666666666e-01)))) (local.get $r2)))
              (f64x2.mul
                (f64x2.add
                  (f64x2.add (f64x2.splat (f64.const 4.1666666666666664e-02)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 8.333333333333333e-03))))
                  (f64x2.mul (f64x2.add (f64x2.splat (f64.const 1.388888888888889e-03)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 1.984126984126984e-04)))) (local.get $r2)))
                (local.get $r4)))
            (f64x2.mul
              (f64x2.add
                (f64x2.add (f64x2.splat (f64.const 2.48015873015873e-05)) (f64x2.mul (local.get $r) (f64x2.splat (f64.const 2.7557319223985893e-06))))
                (f64x2.mul (local.get $r2) (f64x2.splat (f64.const 2.755731922398589e-07))))
              (f64x2.mul (local.get $r4) (local.get $r4))))
          (i64x2.add (i64x2.shl (local.get $kd) (i32.const 52)) (i64x2.splat (i64.const 0x3ff0000000000000)))))
        (local.set $acc (f64x2.add (local.get $acc) (v128.andnot (local.get $e) (local.get $drop))))
        (local.set $wacc (f64x2.add (local.get $wacc)
          (v128.andnot (f64x2.mul (local.get $e) (f64x2.sub (local.get $d) (local.get $dy))) (local.get $drop))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $y (i32.add (local.get $y) (i32.const 16)))
        (br $next)))
    (global.set $weighted (f64.add (f64x2.extract_lane 0 (local.get $wacc)) (f64x2.extract_lane 1 (local.get $wacc))))
    (f64.add (f64x2.extract_lane 0 (local.get $acc)) (f64x2.extract_lane 1 (local.get $acc))))
)
