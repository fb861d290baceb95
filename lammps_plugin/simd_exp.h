/* ----------------------------------------------------------------------
   exp(x) lane by lane for a GCC vector of doubles V (and its int64 vector
   IV), x clamped to [-700, 700]: x = k ln 2 + r (Cody-Waite, |r| <= ln 2 / 2),
   e^r by its Taylor series to r^13 (error < 1e-17), times 2^k through the
   exponent bits; within 2 ulp of std::exp. Inlined into SIMD_CLONES loops
   (simd_clones.h), so it compiles to the vector width the loader picks.
------------------------------------------------------------------------- */

#ifndef EIP2NN_SIMD_EXP_H
#define EIP2NN_SIMD_EXP_H

#include <cstring>

// always inlined: no vector crosses a call, so the ABI note is moot (in the files that include this, too)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace eip2nn {

template <class V, class IV> inline __attribute__((always_inline)) V vexp_lanes(V x)
{
  const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
  const double LOG2E = 1.44269504088896338700e+00, ROUND = 6755399441055744.0;    // 1.5 * 2^52
  const V lowest = V{} - 700.0, highest = V{} + 700.0;
  x = x < lowest ? lowest : x;
  x = x > highest ? highest : x;
  const V k = (x * LOG2E + ROUND) - ROUND;    // nearest integer
  const V r = (x - k * LN2_HI) - k * LN2_LO;
  V p = V{} + 1.0 / 6227020800.0;    // 1/13!
  const double inverse_factorial[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                        1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                                        1.0 / 6.0, 0.5, 1.0, 1.0};
  for (double c : inverse_factorial) p = p * r + c;
  IV bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += __builtin_convertvector(k, IV) << 52;
  std::memcpy(&p, &bits, sizeof p);
  return p;
}

}    // namespace eip2nn

#endif
