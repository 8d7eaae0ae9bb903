//! The few raw blst calls the grouped batch verifier needs. This is the only `unsafe` in
//! `crypto`: each call passes pointers to initialised, correctly sized values that outlive it.

use super::SIGNATURE_BYTES;
use blst::min_sig::Signature;
use blst::{blst_fp12, blst_p1, blst_p1_affine, blst_p2_affine, BLST_ERROR};

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

/// The Miller loop of e(p, q); `p` must not be infinity (callers check).
pub(crate) fn miller_loop(q: &blst_p2_affine, p: &blst_p1_affine) -> blst_fp12 {
    assert!(!is_infinity(p));
    blst_fp12::miller_loop(q, p)
}

/// The G2 generator, affine.
pub(crate) fn g2_generator() -> blst_p2_affine {
    // SAFETY: blst returns a pointer to a static constant.
    unsafe { *blst::blst_p2_affine_generator() }
}

/// True iff FE(lhs) == FE(rhs), i.e. the two products of pairings are equal.
pub(crate) fn pairings_equal(lhs: &blst_fp12, rhs: &blst_fp12) -> bool {
    blst_fp12::finalverify(lhs, rhs)
}
