/* ----------------------------------------------------------------------
   A SchNet layer's continuous-filter convolution from a tabulated filter,
   in one pass over the edges, and its gradient (the pair style's layer-by-layer
   path; eip2nn.nn.export writes the table, see its module docstring).

   table (G, P, F): per interval [i h, (i+1) h) of r (h = spacing, A), the P
   coefficients of the filter, w_f(r) = sum_p table[i][p][f] t^p, t = r / h - i:
   P = 6, quintic Hermite (eip2nn's export), or 4, cubic (files before it).
   Nothing of size edges x F is stored: each edge's filter is evaluated where it
   is used, so the pass runs from cache where the network's filter (two dense
   layers on every edge) streams edges x F tensors through memory several times.
------------------------------------------------------------------------- */

#ifndef EIP2NN_TABULATED_FILTER_H
#define EIP2NN_TABULATED_FILTER_H

#include <torch/torch.h>

namespace eip2nn {

// the table (G, P, F) re-laid for the passes as (G, F / B, P, B), B = 4 doubles or 8 floats (one 32-byte vector:
// each block of B features' P coefficient rows together), when B divides F; otherwise the table as it is. Either
// layout is a `table` for the two functions below. On the blocked layout the passes keep each block's
// coefficients in registers over a run of consecutive edges in one interval (edges sorted by interval, as the
// pair style does within blocks of edges, make the runs long): about 1.4x faster than edge by edge
torch::Tensor blocked_filter_table(const torch::Tensor &table);

// agg (m, F): agg[src[e]] += inputs[dst[e]] * w(r[e]) over edges e; inputs (n, F) and table of one dtype (float32
// or float64), r (E,) in it, src and dst (E,) int64 with src < m and dst < n. The first `pairs` edges go both
// ways: also agg[dst[e]] += inputs[src[e]] * w(r[e]) (their src and dst < min(m, n), rows of the same atom in
// inputs and agg; src = dst allowed), the filter evaluated once for the two (a full neighbour list's edges i -> j
// and j -> i as one)
torch::Tensor tabulated_convolution(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src,
                                    const torch::Tensor &dst, const torch::Tensor &table, double spacing,
                                    int64_t m, int64_t pairs = 0);

// its gradient, from grad_agg (m, F) = dE/d(agg): grad_inputs (n, F) = dE/d(inputs) and grad_r (E,) = dE/dr,
// added into the two (of the inputs' dtype; grad_inputs may be undefined when it is not needed); grad_r of a pair
// is dE/dr of its two directions
void tabulated_convolution_backward(const torch::Tensor &grad_agg, const torch::Tensor &inputs,
                                    const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
                                    const torch::Tensor &table, double spacing, torch::Tensor grad_inputs,
                                    torch::Tensor grad_r, int64_t pairs = 0);

}    // namespace eip2nn

#endif
