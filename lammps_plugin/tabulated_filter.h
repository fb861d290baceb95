/* ----------------------------------------------------------------------
   A SchNet layer's continuous-filter convolution from a tabulated filter,
   in one pass over the edges, and its gradient (the pair style's layer-by-layer
   path; eip2nn.nn.export writes the table, see its module docstring).

   table (G, 4, F): per interval [i h, (i+1) h) of r (h = spacing, A), the cubic
   coefficients of the filter, w_f(r) = sum_p table[i][p][f] t^p, t = r / h - i.
   Nothing of size edges x F is stored: each edge's filter is evaluated where it
   is used, so the pass runs from cache where the network's filter (two dense
   layers on every edge) streams edges x F tensors through memory several times.
------------------------------------------------------------------------- */

#ifndef EIP2NN_TABULATED_FILTER_H
#define EIP2NN_TABULATED_FILTER_H

#include <torch/torch.h>

namespace eip2nn {

// agg (m, F): agg[src[e]] += inputs[dst[e]] * w(r[e]) over edges e; inputs (n, F) and table of one dtype (float32
// or float64), r (E,) in it, src and dst (E,) int64 with src < m and dst < n
torch::Tensor tabulated_convolution(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src,
                                    const torch::Tensor &dst, const torch::Tensor &table, double spacing,
                                    int64_t m);

// its gradient, from grad_agg (m, F) = dE/d(agg): grad_inputs (n, F) = dE/d(inputs) and grad_r (E,) = dE/dr,
// added into the two (of the inputs' dtype; grad_inputs may be undefined when it is not needed)
void tabulated_convolution_backward(const torch::Tensor &grad_agg, const torch::Tensor &inputs,
                                    const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
                                    const torch::Tensor &table, double spacing, torch::Tensor grad_inputs,
                                    torch::Tensor grad_r);

}    // namespace eip2nn

#endif
