/* ----------------------------------------------------------------------
   SIMD_CLONES: a hot loop compiled for AVX-512 and AVX2+FMA (x86-64-v4, v3)
   besides the baseline; the loader picks the best one this CPU runs (GCC/Clang
   function multiversioning). Off with -DEIP2NN_NO_SIMD_CLONES or off x86-64.
------------------------------------------------------------------------- */

#ifndef EIP2NN_SIMD_CLONES_H
#define EIP2NN_SIMD_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(EIP2NN_NO_SIMD_CLONES)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

#endif
