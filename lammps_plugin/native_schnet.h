/* ----------------------------------------------------------------------
   A SchNet's dense layers in C++, forward and backward by hand: no
   TorchScript interpreter, no autograd graph; the products and the
   activation are this plugin's own vectorised kernels (native_schnet.cpp). The pair style's
   layer-by-layer path with the tabulated filter calls these between its own
   feature exchanges and table passes, so a whole step is C++ (the module's
   methods and their autograd cost about a millisecond a step besides).

   The weights are the file's `native_dense` list (eip2nn.nn.export.
   schnet_dense_weights: W features, S species, H head units, Linear weights
   (out, in)): embedding (S, W); per layer in2f (W, W), f2out.0 (W, W) and bias,
   f2out.2 (W, W) and bias; head net.0 (H, W) and bias, net.2 (H,) and bias (1,)
   with the head's scale folded in, offsets (S,). ssp(x) = softplus(x) - ln 2
   between the two layers of each MLP; ssp'(x) = sigmoid(x).

   One layer k on features h (m, W):
     inputs  y = h in2f^T                       (sent to the neighbours)
     output  z = agg f2out.0^T + b0,  h' = h + ssp(z) f2out.2^T + b2
   energies  u = h net.0^T + b,  e = ssp(u) . net.2 + b' + offsets[species]
------------------------------------------------------------------------- */

#ifndef EIP2NN_NATIVE_SCHNET_H
#define EIP2NN_NATIVE_SCHNET_H

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace eip2nn {

class NativeSchNet {
 public:
  // from the file's native_dense list; throws std::runtime_error naming what does not fit (the shapes above,
  // `layers` interactions of `width` features, one dtype)
  NativeSchNet(const std::vector<torch::Tensor> &weights, int layers, int width);

  int layers() const { return nlayers; }
  std::string summary() const;

  // every method runs without autograd; tensors in the weights' dtype
  torch::Tensor initial_features(const torch::Tensor &species) const;                  // (m,) -> (m, W)
  torch::Tensor layer_inputs(int layer, const torch::Tensor &features) const;           // (m, W) -> (m, W)
  // the first layer's inputs of atoms of species (n,): their embedding's layer_inputs(0, ...), from a table of
  // one row per species (what an atom sends first depends on its species alone: no exchange needed)
  torch::Tensor first_inputs(const torch::Tensor &species) const;
  // new features (m, W) from features and agg (m, W); keeps sigmoid(z) of the layer for its backward
  torch::Tensor layer_output(int layer, const torch::Tensor &features, const torch::Tensor &agg);
  // per-atom energies (m,) eV; keeps sigmoid(u) for energies_backward
  torch::Tensor energies(const torch::Tensor &species, const torch::Tensor &features);

  // dE/d(features) (m, W) of the last layer's features, E = the sum of the energies
  torch::Tensor energies_backward() const;
  // from g = dE/dh' (m, W) of the layer's output: dE/d(agg) (m, W); dE/dh through the residual is g itself
  torch::Tensor layer_output_backward(int layer, const torch::Tensor &g) const;
  // from dE/dy (m, W) of the layer's inputs: dE/dh (m, W) through in2f, plus `add` (m, W) if given
  torch::Tensor layer_inputs_backward(int layer, const torch::Tensor &grad_inputs,
                                      const torch::Tensor &add = torch::Tensor()) const;

 private:
  struct Layer {
    torch::Tensor in2f, w0, b0, w2, b2;
    torch::Tensor in2f_t, w0_t, w2_t;    // transposed, contiguous: (in, out)
  };
  // x (m, K) B (K, N) + bias (N) + init (m, N), the last two if defined (this file's row kernel)
  static torch::Tensor times(const torch::Tensor &x, const torch::Tensor &B, const torch::Tensor &bias = torch::Tensor(),
                             const torch::Tensor &init = torch::Tensor());
  // (ssp(z), sigmoid(z)) of a contiguous z
  static std::pair<torch::Tensor, torch::Tensor> activate(const torch::Tensor &z);
  int nlayers, nwidth;
  torch::Tensor embedding, head_w0, head_b0, head_w2, head_b2, offsets, head_w0_t;
  torch::Tensor first_inputs_of_species;    // (S, W)
  std::vector<Layer> layer_weights;
  std::vector<torch::Tensor> sigmoid_z;    // per layer, of the last forward
  torch::Tensor sigmoid_u;
};

}    // namespace eip2nn

#endif
