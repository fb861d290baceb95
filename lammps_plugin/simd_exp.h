/* ----------------------------------------------------------------------
   exp(x) lane by lane for a GCC vector V of doubles or floats (IV: the
   integer vector of the same lanes, int64 or int32): x clamped to the type's
   range, x = k ln 2 + r (Cody-Waite, |r| <= ln 2 / 2), e^r by its Taylor series
   (doubles: to r^13, error < 1e-17, within 2 ulp of std::exp; floats: to r^7,
   error < 6e-8), times 2^k through the exponent bits. Inlined into SIMD_CLONES
   loops (simd_clones.h), so it compiles to the vector width the loader picks.
------------------------------------------------------------------------- */

#ifndef EIP2NN_SIMD_EXP_H
#define EIP2NN_SIMD_EXP_H

#include <cstring>
#include <type_traits>

// always inlined: no vector crosses a call, so the ABI note is moot (in the files that include this, too)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace eip2nn {

template <typename T> struct ExpConstants;
template <> struct ExpConstants<double> {
  static constexpr double LOWEST = -700.0, HIGHEST = 700.0;
  static constexpr double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
  static constexpr double LOG2E = 1.44269504088896338700e+00, ROUND = 6755399441055744.0;    // 1.5 * 2^52
  static constexpr int MANTISSA = 52, TERMS = 13;
};
template <> struct ExpConstants<float> {
  static constexpr float LOWEST = -87.0f, HIGHEST = 88.0f;
  static constexpr float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
  static constexpr float LOG2E = 1.44269504f, ROUND = 12582912.0f;    // 1.5 * 2^23
  static constexpr int MANTISSA = 23, TERMS = 7;
};

// 1 / j!, j = 0 ... 13
constexpr double INVERSE_FACTORIAL[14] = {1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0,
                                          1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362880.0, 1.0 / 3628800.0,
                                          1.0 / 39916800.0, 1.0 / 479001600.0, 1.0 / 6227020800.0};

template <class V, class IV> inline __attribute__((always_inline)) V vexp_lanes(V x)
{
  typedef std::remove_cv_t<std::remove_reference_t<decltype(x[0])>> T;
  typedef ExpConstants<T> C;
  const V lowest = V{} + C::LOWEST, highest = V{} + C::HIGHEST;
  x = x < lowest ? lowest : x;
  x = x > highest ? highest : x;
  const V k = (x * C::LOG2E + C::ROUND) - C::ROUND;    // nearest integer
  const V r = (x - k * C::LN2_HI) - k * C::LN2_LO;
  V p = V{} + T(INVERSE_FACTORIAL[C::TERMS]);
  for (int j = C::TERMS - 1; j >= 0; j--) p = p * r + T(INVERSE_FACTORIAL[j]);
  IV bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += __builtin_convertvector(k, IV) << C::MANTISSA;
  std::memcpy(&p, &bits, sizeof p);
  return p;
}

}    // namespace eip2nn

#endif
