//! The few raw blst calls the grouped batch verifier needs. This is the only `unsafe` in
//! `crypto`: each call passes pointers to initialised, correctly sized values that outlive it.

use super::SIGNATURE_BYTES;
use blst::min_sig::Signature;
use blst::{
    blst_fp, blst_fp12, blst_fp2, blst_fp6, blst_p1, blst_p1_affine, blst_p2_affine, BLST_ERROR,
};
use std::sync::OnceLock;

/// Bytes of one batch scalar in the flat scalar buffer.
pub(crate) const SCALAR_BYTES: usize = super::BATCH_SCALAR_BITS / 8;

/// Why signature bytes were refused before any pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointError {
    /// Not a canonical compressed encoding of a curve point, or not in the G1 subgroup.
    Malformed,
    /// The point at infinity (the "signature" of nothing).
    Infinity,
}

/// Decompresses and fully validates a signature: on curve, not infinity, in the G1 subgroup.
pub(crate) fn decode_signature(bytes: &[u8; SIGNATURE_BYTES]) -> Result<Signature, PointError> {
    let signature = Signature::from_bytes(bytes).map_err(|_| PointError::Malformed)?;
    match signature.validate(true) {
        Ok(()) => Ok(signature),
        Err(BLST_ERROR::BLST_PK_IS_INFINITY) => Err(PointError::Infinity),
        Err(_) => Err(PointError::Malformed),
    }
}

/// hash_to_G1(msg) under `dst` (RFC 9380 SSWU, random oracle), in affine form.
pub(crate) fn hash_to_g1(msg: &[u8], dst: &[u8]) -> blst_p1_affine {
    let mut point = blst_p1::default();
    let mut affine = blst_p1_affine::default();
    // SAFETY: out-pointers are valid locals; msg/dst slices are valid for their lengths; aug is empty.
    unsafe {
        blst::blst_hash_to_g1(
            &mut point,
            msg.as_ptr(),
            msg.len(),
            dst.as_ptr(),
            dst.len(),
            std::ptr::null(),
            0,
        );
        blst::blst_p1_to_affine(&mut affine, &point);
    }
    affine
}

/// Σ scalars[i]·points[i] with `SCALAR_BYTES`-byte little-endian scalars, on the calling thread
/// (blst's own `mult` would hand the work to its internal pool).
pub(crate) fn multi_scalar_mult(points: &[blst_p1_affine], scalars: &[u8]) -> blst_p1 {
    assert!(!points.is_empty());
    assert_eq!(scalars.len(), points.len() * SCALAR_BYTES);
    let mut out = blst_p1::default();
    let point_ptrs: [*const blst_p1_affine; 2] = [points.as_ptr(), std::ptr::null()];
    let scalar_ptrs: [*const u8; 2] = [scalars.as_ptr(), std::ptr::null()];
    // SAFETY: scratch is sized by blst for `points.len()`; the [ptr, null] convention tells blst
    // the points and scalars are contiguous arrays of `points.len()` entries, checked above.
    unsafe {
        let scratch_bytes = blst::blst_p1s_mult_pippenger_scratch_sizeof(points.len());
        let mut scratch = vec![0u64; scratch_bytes.div_ceil(8)];
        blst::blst_p1s_mult_pippenger(
            &mut out,
            point_ptrs.as_ptr(),
            points.len(),
            scalar_ptrs.as_ptr(),
            super::BATCH_SCALAR_BITS,
            scratch.as_mut_ptr(),
        );
    }
    out
}

pub(crate) fn add(a: &blst_p1, b: &blst_p1) -> blst_p1 {
    let mut out = blst_p1::default();
    // SAFETY: all pointers are to valid values; blst handles infinity and doubling.
    unsafe { blst::blst_p1_add_or_double(&mut out, a, b) };
    out
}

pub(crate) fn to_affine(point: &blst_p1) -> blst_p1_affine {
    let mut out = blst_p1_affine::default();
    // SAFETY: valid in/out pointers.
    unsafe { blst::blst_p1_to_affine(&mut out, point) };
    out
}

pub(crate) fn is_infinity(point: &blst_p1_affine) -> bool {
    // SAFETY: valid pointer.
    unsafe { blst::blst_p1_affine_is_inf(point) }
}

/// Line coefficients one G2 point contributes to a BLS12-381 Miller loop: one per doubling and
/// addition step of the loop over |z| = 0xd201000000010000 (blst.h: `blst_fp6 Qlines[68]`).
pub(crate) const G2_LINES: usize = 68;

/// Bytes of one `G2Lines` (68 x 288 = 19,584).
pub(crate) const G2_LINES_BYTES: usize = G2_LINES * std::mem::size_of::<blst_fp6>();
const _: () = assert!(G2_LINES_BYTES == 19_584);

/// The precomputed Miller-loop lines of one fixed G2 point `q`. `miller_loop_lines(&lines, p)`
/// equals blst's `miller_loop(q, p)` bit for bit (the same field operations, with the G2 point
/// doubling and addition done once, here, instead of in every loop); boxed, as it is 19.6 KB.
#[derive(Clone)]
pub(crate) struct G2Lines {
    lines: Box<[blst_fp6; G2_LINES]>,
}

impl std::fmt::Debug for G2Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "G2Lines({G2_LINES_BYTES} bytes)")
    }
}

/// The lines of `q` (validated: on the curve, in G2, not infinity; callers hold such points only).
pub(crate) fn precompute_lines(q: &blst_p2_affine) -> G2Lines {
    // SAFETY: valid pointer.
    assert!(!unsafe { blst::blst_p2_affine_is_inf(q) });
    let mut lines = Box::new([blst_fp6::default(); G2_LINES]);
    // SAFETY: `lines` is an initialised array of exactly the 68 `blst_fp6` that blst writes;
    // `q` is a valid point.
    unsafe { blst::blst_precompute_lines(lines.as_mut_ptr(), q) };
    G2Lines { lines }
}

/// The Miller loop of e(p, q) from q's precomputed lines; `p` must not be infinity (callers
/// check: blst's line evaluation has no infinity case).
pub(crate) fn miller_loop_lines(lines: &G2Lines, p: &blst_p1_affine) -> blst_fp12 {
    assert!(!is_infinity(p));
    let mut out = blst_fp12::default();
    // SAFETY: `lines` points to the 68 initialised `blst_fp6` blst reads; `out` and `p` are valid.
    unsafe { blst::blst_miller_loop_lines(&mut out, lines.lines.as_ptr(), p) };
    out
}

/// The doubling runs of the Miller loop over |z| = 0xd201000000010000 as blst walks the 68 lines:
/// line 0 starts the loop, then each run is one addition line followed by that many doublings
/// (blst `miller_loop_lines`: lines 1-3, 4-7, 8-17, 18-50, 51-67).
const MILLER_RUNS: [(usize, usize); 5] = [(1, 2), (4, 3), (8, 9), (18, 32), (51, 16)];

/// Π_k ML(p_k, q_k) for fixed G2 points given by their lines, in one loop: the accumulator is
/// squared once per doubling step for all pairs together, where separate loops square it once per
/// pair (63 Fp12 squarings each). Equal, as an Fp12 element, to the product of
/// `miller_loop_lines` over the pairs (it runs the same line evaluations and multiplications).
/// No `p` may be infinity (see `miller_loop_lines`); `pairs` must not be empty.
pub(crate) fn miller_loop_lines_n(pairs: &[(&G2Lines, blst_p1_affine)]) -> blst_fp12 {
    assert!(!pairs.is_empty());
    // Per pair, (-2·x, 2·y) of p: what blst's line evaluation multiplies the lines by.
    let scaled: Vec<(blst_fp, blst_fp)> = pairs
        .iter()
        .map(|(_, p)| {
            assert!(!is_infinity(p));
            let (mut x2, mut y2) = (blst_fp::default(), blst_fp::default());
            // SAFETY: valid in/out pointers to initialised field elements.
            unsafe {
                blst::blst_fp_add(&mut x2, &p.x, &p.x);
                let doubled = x2;
                blst::blst_fp_cneg(&mut x2, &doubled, true);
                blst::blst_fp_add(&mut y2, &p.y, &p.y);
            }
            (x2, y2)
        })
        .collect();
    let line_at = |pair: usize, index: usize| -> blst_fp6 {
        let line = &pairs[pair].0.lines[index];
        let (x2, y2) = &scaled[pair];
        let mut out = *line;
        for (row, factor) in [(1, x2), (2, y2)] {
            for half in 0..2 {
                // SAFETY: valid in/out pointers to initialised field elements.
                unsafe {
                    blst::blst_fp_mul(&mut out.fp2[row].fp[half], &line.fp2[row].fp[half], factor)
                };
            }
        }
        out
    };
    let times_line = |f: &mut blst_fp12, line: &blst_fp6| {
        let a = *f;
        // SAFETY: valid in/out pointers; `line` is the sparse "xy00z0" form blst expects.
        unsafe { blst::blst_fp12_mul_by_xy00z0(f, &a, line) };
    };
    // The loop starts from 1² · line: the first pair's line as an Fp12, the others multiplied in.
    let first = line_at(0, 0);
    let zero = blst_fp2::default();
    let mut f = blst_fp12 {
        fp6: [
            blst_fp6 {
                fp2: [first.fp2[0], first.fp2[1], zero],
            },
            blst_fp6 {
                fp2: [zero, first.fp2[2], zero],
            },
        ],
    };
    for pair in 1..pairs.len() {
        times_line(&mut f, &line_at(pair, 0));
    }
    for (start, doublings) in MILLER_RUNS {
        for pair in 0..pairs.len() {
            times_line(&mut f, &line_at(pair, start));
        }
        for step in 1..=doublings {
            let a = f;
            // SAFETY: valid in/out pointers.
            unsafe { blst::blst_fp12_sqr(&mut f, &a) };
            for pair in 0..pairs.len() {
                times_line(&mut f, &line_at(pair, start + step));
            }
        }
    }
    // SAFETY: valid pointer; z is negative, as in blst.
    unsafe { blst::blst_fp12_conjugate(&mut f) };
    f
}

/// -p (p is affine: the same x, the negated y).
pub(crate) fn negate(p: &blst_p1_affine) -> blst_p1_affine {
    let mut out = *p;
    // SAFETY: valid in/out pointers to initialised field elements.
    unsafe { blst::blst_fp_cneg(&mut out.y, &p.y, true) };
    out
}

/// True iff the final exponentiation of `f` is 1, i.e. the product of pairings whose Miller loops
/// multiplied to `f` is 1.
pub(crate) fn pairing_product_is_one(f: &blst_fp12) -> bool {
    blst_fp12::finalverify(&blst_fp12::default(), f) // `default` is one
}

/// The G2 generator, affine.
pub(crate) fn g2_generator() -> blst_p2_affine {
    // SAFETY: blst returns a pointer to a static constant.
    unsafe { *blst::blst_p2_affine_generator() }
}

/// The G2 generator's lines, computed once per process on first use.
pub(crate) fn g2_generator_lines() -> &'static G2Lines {
    static LINES: OnceLock<G2Lines> = OnceLock::new();
    LINES.get_or_init(|| precompute_lines(&g2_generator()))
}

/// True iff FE(lhs) == FE(rhs), i.e. the two products of pairings are equal.
pub(crate) fn pairings_equal(lhs: &blst_fp12, rhs: &blst_fp12) -> bool {
    blst_fp12::finalverify(lhs, rhs)
}
