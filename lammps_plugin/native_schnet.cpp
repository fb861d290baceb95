/* ----------------------------------------------------------------------
   native_schnet.h: a SchNet's dense layers as plain ATen calls, by hand.
------------------------------------------------------------------------- */

#include "native_schnet.h"

#include <cmath>
#include <stdexcept>

namespace eip2nn {

namespace {

// shifted softplus as torch.nn.functional.softplus (beta 1, threshold 20) minus ln 2
torch::Tensor shifted_softplus(const torch::Tensor &x)
{
  return at::softplus(x, 1, 20).sub_(std::log(2.0));
}

std::string shape_of(const torch::Tensor &t)
{
  return c10::str(t.sizes(), " ", t.scalar_type());
}

}    // namespace

NativeSchNet::NativeSchNet(const std::vector<torch::Tensor> &weights, int layers, int width) :
    nlayers(layers), nwidth(width)
{
  const size_t expected = 1 + 5 * (size_t) layers + 5;
  if (layers < 1 || width < 1 || weights.size() != expected)
    throw std::runtime_error(c10::str("native_dense has ", weights.size(), " tensors; ", expected, " expected for ",
                                      layers, " layers"));
  const auto dtype = weights[0].scalar_type();
  if (dtype != torch::kFloat32 && dtype != torch::kFloat64)
    throw std::runtime_error(c10::str("native_dense is ", dtype, ", not float32 or float64"));
  size_t next = 0;
  auto take = [&](const char *what, std::vector<int64_t> shape) -> torch::Tensor {
    const torch::Tensor &t = weights[next++];
    bool ok = t.scalar_type() == dtype && t.dim() == (int64_t) shape.size();
    for (size_t d = 0; ok && d < shape.size(); d++) ok = shape[d] < 0 || t.size(d) == shape[d];
    if (!ok)
      throw std::runtime_error(c10::str("native_dense tensor ", next - 1, " (", what, ") is ", shape_of(t),
                                        ", expected ", c10::IntArrayRef(shape), " ", dtype, " (-1: any)"));
    return t.contiguous();
  };
  embedding = take("embedding", {-1, width});
  const int64_t species = embedding.size(0);
  for (int k = 0; k < layers; k++) {
    Layer l;
    l.in2f = take("in2f", {width, width});
    l.w0 = take("f2out.0 weight", {width, width});
    l.b0 = take("f2out.0 bias", {width});
    l.w2 = take("f2out.2 weight", {width, width});
    l.b2 = take("f2out.2 bias", {width});
    layer_weights.push_back(l);
  }
  head_w0 = take("head net.0 weight", {-1, width});
  head_b0 = take("head net.0 bias", {head_w0.size(0)});
  head_w2 = take("head net.2 weight", {head_w0.size(0)});
  head_b2 = take("head net.2 bias", {1});
  offsets = take("offsets", {species});
  sigmoid_z.resize(layers);
}

std::string NativeSchNet::summary() const
{
  return c10::str(nlayers, " layers of ", nwidth, " features, head of ", head_w0.size(0), " units, ",
                  embedding.scalar_type());
}

torch::Tensor NativeSchNet::initial_features(const torch::Tensor &species) const
{
  return embedding.index_select(0, species);
}

torch::Tensor NativeSchNet::layer_inputs(int layer, const torch::Tensor &features) const
{
  return at::mm(features, layer_weights.at(layer).in2f.t());
}

torch::Tensor NativeSchNet::layer_output(int layer, const torch::Tensor &features, const torch::Tensor &agg)
{
  const Layer &l = layer_weights.at(layer);
  torch::Tensor z = at::addmm(l.b0, agg, l.w0.t());
  sigmoid_z[layer] = at::sigmoid(z);
  return at::addmm(l.b2, shifted_softplus(z), l.w2.t()).add_(features);
}

torch::Tensor NativeSchNet::energies(const torch::Tensor &species, const torch::Tensor &features)
{
  torch::Tensor u = at::addmm(head_b0, features, head_w0.t());
  sigmoid_u = at::sigmoid(u);
  return at::mv(shifted_softplus(u), head_w2).add_(head_b2).add_(offsets.index_select(0, species));
}

torch::Tensor NativeSchNet::energies_backward() const
{
  return at::mm(sigmoid_u * head_w2, head_w0);
}

torch::Tensor NativeSchNet::layer_output_backward(int layer, const torch::Tensor &g) const
{
  const Layer &l = layer_weights.at(layer);
  return at::mm(at::mm(g, l.w2).mul_(sigmoid_z.at(layer)), l.w0);
}

torch::Tensor NativeSchNet::layer_inputs_backward(int layer, const torch::Tensor &grad_inputs) const
{
  return at::mm(grad_inputs, layer_weights.at(layer).in2f);
}

}    // namespace eip2nn
