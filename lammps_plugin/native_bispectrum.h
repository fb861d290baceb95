/* -*- c++ -*- ----------------------------------------------------------
   The SNAP bispectrum of eip2nn's TorchBispectrum (eip2nn/nn/bispectrum_torch.py)
   in plain C++ (float64), for pair_style eip2nn's native path: per atom the
   density U_i and the components B_i, and, for weights beta of the components
   (dE/dB from the network), the gradient of sum_k beta_k B_k with respect to
   each edge vector by the adjoint method:
     Y = d(beta . B)/dU_i (per atom), then per edge dE/dv = Y . d(f_c U)/dv
   by reverse mode: Y goes back through the edge's U^j recursion to the
   Cayley-Klein parameters a, b, then by the chain rule to v.
   Every table (recursion coefficients, signs, U_i's start, the term list of B)
   is read from the scripted module, so this file holds no Clebsch-Gordan maths.
------------------------------------------------------------------------- */

#ifndef EIP2NN_NATIVE_BISPECTRUM_H
#define EIP2NN_NATIVE_BISPECTRUM_H

#include <torch/script.h>

#include <cstdint>
#include <vector>

namespace eip2nn {

class NativeBispectrum {
 public:
  // the tables and settings (buffers and attributes) of a scripted TorchBispectrum; std::runtime_error
  // naming the table if one is missing or inconsistent
  explicit NativeBispectrum(const torch::jit::Module &descriptor);

  int size() const { return n_components; }            // K, components of B
  int density_size() const { return 2 * n_u; }          // U_i: n_u real parts, then n_u imaginary parts
  int twojmax() const { return two_jmax; }

  // U_i (density_size()) of an atom whose edges have vectors (n, 3) A = x_dst - x_src; edges with
  // r >= cutoff or r <= 1e-10 count 0
  void density(const double *vectors, int n, double *u);
  // B (K) from U_i (bzero subtracted if the module does)
  void components(const double *u, double *b) const;
  // Y (density_size()) = d(sum_k beta_k B_k)/dU_i, beta (K)
  void adjoint(const double *u, const double *beta, double *y) const;
  // g (n, 3) = d(sum_k beta_k B_k)/dv for each edge vector v (n, 3), from that atom's Y
  void edge_gradients(const double *vectors, int n, const double *y, double *g);

 private:
  // B[component] += Re(conj(u[j]) z), z = sum over the group's terms of coef u[j1] u[j2] (indices into the
  // n_u entries of U_i); a group is a run of the module's terms with one (component, j)
  struct Group {
    int32_t j, component, first, last;    // terms [first, last)
  };
  struct Term {
    int32_t j1, j2;
    double coef;
  };
  // the Cayley-Klein parameters and switching weight of edge vector v (3,), with their d/dv if asked;
  // false if the edge counts 0
  bool edge_geometry(const double *v, bool derivatives);
  // the top rows (2 m' <= j) of every U^j of the current edge, and row (j+1)/2 of odd j (the next j
  // needs it)
  void edge_wigner();
  // dE/d(ar, ai, br, bi) (4) of the current edge from w = dE/dU on its top rows (folded_re, folded_im),
  // by reverse mode through edge_wigner (its U^j must be current)
  void edge_wigner_backward(double grad_ab[4]);
  // bottom rows of U_i from its top rows: U^j[j-m', j-m] = (-1)^(m'+m) conj(U^j[m', m])
  void mirror_density(double *u) const;

  // settings
  double cutoff, rfac0, rmin0;
  bool bzero;
  int two_jmax, n_u, n_components;
  // tables
  std::vector<double> coef_a, coef_b, signs, u_start, bzero_values;
  std::vector<Group> groups;
  std::vector<Term> terms;
  std::vector<int> u_offset;       // per j: first entry of U^j among the n_u
  std::vector<int> coef_offset;    // per j >= 1: first entry in coef_a / coef_b (rows j/2+1 of j+1)
  std::vector<int> sign_offset;    // per j >= 1: first entry in signs ((j+1)^2)

  // the current edge: r, parameters a = ar + i ai, b = br + i bi (conjugates of the Cayley-Klein ones),
  // weight f_c, and their derivatives with respect to the edge vector
  double ar, ai, br, bi, fc;
  double dar[3], dai[3], dbr[3], dbi[3], dfc[3];
  // its U^j (n_u real, n_u imaginary; top rows only) and their adjoints dE/dU^j in edge_wigner_backward
  std::vector<double> edge_re, edge_im, adj_re, adj_im;
  // Y folded onto the top rows (the bottom rows are conjugates of them)
  std::vector<double> folded_re, folded_im;
};

}    // namespace eip2nn

#endif
