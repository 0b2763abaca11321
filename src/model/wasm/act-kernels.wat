;; SIMD kernels for the element-wise parts of a transformer block that call exp: the gated MLP's
;; activation (SiLU or tanh-GELU, times up) and attention's masked row softmax (scale, Gemma 2's
;; soft-cap). V8 runs Math.exp / Math.tanh one element at a time (~20 ns each): 11-15 % of an
;; evaluation. Built into act-kernels.ts by scripts/build-wasm.mjs.
;;
;; Data is f32 in the module's memory, copied in by the caller (model/act-simd.ts), which leaves 16
;; bytes of slack after the last element: groups of four may read (never keep) up to three more.
(module
  (memory (export "memory") 1)

  ;; exp of four f32, ~1 ulp (Cephes expf): x = k·ln2 + r, |r| ≤ ln2/2, exp(r) = 1 + r + r²·P(r) with P
  ;; of degree 5, 2^k built in the exponent bits. The polynomial runs on x clamped to [-87, 88], where
  ;; 2^k stays a normal f32; below -87.4 the result is 0, above 88.7 +Inf (past f32's range), so that
  ;; x/(1 + exp(−x)) is ±0 and x at the ends as in f64. NaN stays NaN (wasm's min/max propagate it).
  (func $exp (param $in v128) (result v128)
    (local $x v128) (local $kd v128) (local $k v128) (local $r v128) (local $p v128)
    (local.set $x (f32x4.min (f32x4.max (local.get $in) (f32x4.splat (f32.const -87))) (f32x4.splat (f32.const 88))))
    ;; k = round(x / ln2) by adding 1.5·2^23, whose ulp is 1: the sum's low mantissa bits then hold k
    (local.set $kd (f32x4.add (f32x4.mul (local.get $x) (f32x4.splat (f32.const 1.44269504088896341)))
      (f32x4.splat (f32.const 12582912))))
    (local.set $k (f32x4.sub (local.get $kd) (f32x4.splat (f32.const 12582912))))
    ;; ln2 split in two: 0.693359375 has 9 bits, so k times it is exact
    (local.set $r (f32x4.sub
      (f32x4.sub (local.get $x) (f32x4.mul (local.get $k) (f32x4.splat (f32.const 0.693359375))))
      (f32x4.mul (local.get $k) (f32x4.splat (f32.const -2.12194440e-4)))))
    (local.set $p (f32x4.add (f32x4.mul (f32x4.splat (f32.const 1.9875691500e-4)) (local.get $r)) (f32x4.splat (f32.const 1.3981999507e-3))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 8.3334519073e-3))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 4.1665795894e-2))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 1.6666665459e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (f32x4.splat (f32.const 5.0000001201e-1))))
    (local.set $p (f32x4.mul
      (f32x4.add (f32x4.add (f32x4.mul (local.get $p) (f32x4.mul (local.get $r) (local.get $r))) (local.get $r)) (f32x4.splat (f32.const 1)))
      ;; 2^k: the bits of kd are those of 1.5·2^23 plus k, and 1.5·2^23 << 23 wraps to 0
      (i32x4.add (i32x4.shl (local.get $kd) (i32.const 23)) (i32x4.splat (i32.const 0x3f800000)))))
    (v128.bitselect (f32x4.splat (f32.const inf))
      (v128.andnot (local.get $p) (f32x4.lt (local.get $in) (f32x4.splat (f32.const -87.4))))
      (f32x4.gt (local.get $in) (f32x4.splat (f32.const 88.7)))))

  ;; cap·tanh(x/cap) of four f32 (Cephes tanhf): with z = x/cap, x + x·z²·P(z²) below |z| = 0.625,
  ;; where cap·(1 − 2/(exp(2|z|) + 1)) would lose the low bits to cancellation (and x itself is kept
  ;; rather than cap·(x/cap), one rounding fewer); that above, with x's sign. ±cap past |z| = 44.
  (func $softcap (param $x v128) (param $cap v128) (result v128)
    (local $z v128) (local $a v128) (local $z2 v128) (local $p v128)
    (local.set $z (f32x4.div (local.get $x) (local.get $cap)))
    (local.set $a (f32x4.abs (local.get $z)))
    (local.set $z2 (f32x4.mul (local.get $z) (local.get $z)))
    (local.set $p (f32x4.add (f32x4.mul (f32x4.splat (f32.const -5.70498872745e-3)) (local.get $z2)) (f32x4.splat (f32.const 2.06390887954e-2))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $z2)) (f32x4.splat (f32.const -5.37397155531e-2))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $z2)) (f32x4.splat (f32.const 1.33314422036e-1))))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $z2)) (f32x4.splat (f32.const -3.33332819422e-1))))
    (v128.bitselect
      (f32x4.add (f32x4.mul (local.get $x) (f32x4.mul (local.get $p) (local.get $z2))) (local.get $x))
      (v128.or
        (f32x4.mul (local.get $cap) (f32x4.sub (f32x4.splat (f32.const 1))
          (f32x4.div (f32x4.splat (f32.const 2)) (f32x4.add (call $exp (f32x4.add (local.get $a) (local.get $a))) (f32x4.splat (f32.const 1))))))
        (v128.and (local.get $x) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)))
      (f32x4.lt (local.get $a) (f32x4.splat (f32.const 0.625)))))

  ;; g[i] = act(g[i])·u[i] for the n f32 at $g and $u, n rounded up to a group of four. act is SiLU,
  ;; x/(1 + exp(−x)), or with $gelu ≠ 0 the tanh-approximated GELU written the same way:
  ;; 0.5·x·(1 + tanh(y)) = x/(1 + exp(−2y)), y = √(2/π)·(x + 0.044715·x³), which keeps its relative
  ;; accuracy where 1 + tanh(y) would cancel.
  (func (export "gated") (param $g i32) (param $u i32) (param $n i32) (param $gelu i32)
    (local $end i32) (local $x v128) (local $z v128)
    (local.set $end (i32.add (local.get $g) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $g) (local.get $end)))
        (local.set $x (v128.load (local.get $g)))
        (if (local.get $gelu)
          (then
            ;; −2y = x·(−2√(2/π) − 2√(2/π)·0.044715·x²)
            (local.set $z (f32x4.mul (local.get $x)
              (f32x4.add (f32x4.splat (f32.const -1.5957691216057308))
                (f32x4.mul (f32x4.splat (f32.const -0.07135481627260025)) (f32x4.mul (local.get $x) (local.get $x)))))))
          (else (local.set $z (f32x4.neg (local.get $x)))))
        (v128.store (local.get $g)
          (f32x4.mul
            (f32x4.div (local.get $x) (f32x4.add (f32x4.splat (f32.const 1)) (call $exp (local.get $z))))
            (v128.load (local.get $u))))
        (local.set $g (i32.add (local.get $g) (i32.const 16)))
        (local.set $u (i32.add (local.get $u) (i32.const 16)))
        (br $next))))

  ;; The lanes of the group at $p that lie before $end (all ones), the others zero.
  (func $inside (param $p i32) (param $end i32) (result v128)
    (i32x4.lt_s (v128.const i32x4 0 1 2 3) (i32x4.splat (i32.shr_s (i32.sub (local.get $end) (local.get $p)) (i32.const 2)))))

  ;; Causal softmax of $rows rows of $len scores at $at, in place. Row j sees positions [lo, last]
  ;; with last = $last + j and lo = max(0, last − $window + 1) ($window 0: lo = 0): those become
  ;; softmax(x·scale), each x·scale first soft-capped to cap·tanh(x·scale/cap) when $cap ≠ 0; the
  ;; others become 0. Exps are summed in f64. A row's last group is written through a lane mask, so
  ;; the next row's first scores are left as they are.
  (func (export "softmaxRows") (param $at i32) (param $rows i32) (param $len i32) (param $last i32) (param $window i32) (param $scale f32) (param $cap f32)
    (local $row i32) (local $lo i32) (local $p i32) (local $end i32) (local $stop i32)
    (local $in v128) (local $old v128) (local $x v128) (local $m v128) (local $acc v128)
    (local $max f32) (local $inv f32)
    (local.set $stop (i32.add (local.get $at) (i32.shl (i32.mul (local.get $rows) (local.get $len)) (i32.const 2))))
    (local.set $row (local.get $at))
    (block $rowsDone
      (loop $nextRow
        (br_if $rowsDone (i32.ge_u (local.get $row) (local.get $stop)))
        (local.set $lo (i32.const 0))
        (if (local.get $window)
          (then (if (i32.gt_s (i32.sub (local.get $last) (local.get $window)) (i32.const -1))
            (then (local.set $lo (i32.add (i32.sub (local.get $last) (local.get $window)) (i32.const 1)))))))
        (local.set $end (i32.add (local.get $row) (i32.shl (i32.add (local.get $last) (i32.const 1)) (i32.const 2))))
        ;; scale (and cap), keep, and take the maximum
        (local.set $m (f32x4.splat (f32.const -inf)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $lo) (i32.const 2))))
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $in (call $inside (local.get $p) (local.get $end)))
            (local.set $old (v128.load (local.get $p)))
            (local.set $x (f32x4.mul (local.get $old) (f32x4.splat (local.get $scale))))
            (if (f32.ne (local.get $cap) (f32.const 0))
              (then (local.set $x (call $softcap (local.get $x) (f32x4.splat (local.get $cap))))))
            (v128.store (local.get $p) (v128.bitselect (local.get $x) (local.get $old) (local.get $in)))
            (local.set $m (f32x4.max (local.get $m)
              (v128.bitselect (local.get $x) (f32x4.splat (f32.const -inf)) (local.get $in))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $next)))
        (local.set $max (f32.max
          (f32.max (f32x4.extract_lane 0 (local.get $m)) (f32x4.extract_lane 1 (local.get $m)))
          (f32.max (f32x4.extract_lane 2 (local.get $m)) (f32x4.extract_lane 3 (local.get $m)))))
        ;; exp(x − max), kept and summed in f64
        (local.set $acc (f64x2.splat (f64.const 0)))
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $lo) (i32.const 2))))
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $in (call $inside (local.get $p) (local.get $end)))
            (local.set $old (v128.load (local.get $p)))
            (local.set $x (v128.and (call $exp (f32x4.sub (local.get $old) (f32x4.splat (local.get $max)))) (local.get $in)))
            (v128.store (local.get $p) (v128.bitselect (local.get $x) (local.get $old) (local.get $in)))
            (local.set $acc (f64x2.add (local.get $acc)
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $x))
                (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $next)))
        (local.set $inv (f32.demote_f64 (f64.div (f64.const 1)
          (f64.add (f64x2.extract_lane 0 (local.get $acc)) (f64x2.extract_lane 1 (local.get $acc))))))
        ;; normalize
        (local.set $p (i32.add (local.get $row) (i32.shl (local.get $lo) (i32.const 2))))
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $old (v128.load (local.get $p)))
            (v128.store (local.get $p) (v128.bitselect
              (f32x4.mul (local.get $old) (f32x4.splat (local.get $inv))) (local.get $old) (call $inside (local.get $p) (local.get $end))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $next)))
        ;; the positions the row does not see
        (memory.fill (local.get $row) (i32.const 0) (i32.shl (local.get $lo) (i32.const 2)))
        (local.set $row (i32.add (local.get $row) (i32.shl (local.get $len) (i32.const 2))))
        (memory.fill (local.get $end) (i32.const 0) (i32.sub (local.get $row) (local.get $end)))
        (local.set $last (i32.add (local.get $last) (i32.const 1)))
        (br $nextRow))))
)
