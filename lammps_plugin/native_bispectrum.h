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

   SIMD without intrinsics: LANES atoms (B, Y) or LANES edges of one atom (the
   U^j recursion and its reverse) go through the same arithmetic together, one
   per lane of a GCC/Clang vector (Lanes). Per atom or edge the operations and
   their order are the scalar ones.
------------------------------------------------------------------------- */

#ifndef EIP2NN_NATIVE_BISPECTRUM_H
#define EIP2NN_NATIVE_BISPECTRUM_H

#include <torch/script.h>

#include <cstdint>
#include <vector>

namespace eip2nn {

constexpr int LANES = 8;         // atoms of a batch (B, Y)
constexpr int EDGE_LANES = 8;    // edges of an atom in one U^j recursion
// LANES (EDGE_LANES) doubles; aligned as a double and allowed to alias doubles, so that a buffer of doubles
// (entry-major: entry i of lane l at [i * LANES + l]) can be read as vectors
typedef double Lanes __attribute__((vector_size(8 * LANES), aligned(8), may_alias));
typedef double EdgeLanes __attribute__((vector_size(8 * EDGE_LANES), aligned(8), may_alias));

class NativeBispectrum {
 public:
  // the tables and settings (buffers and attributes) of a scripted TorchBispectrum; std::runtime_error
  // naming the table if one is missing or inconsistent
  explicit NativeBispectrum(const torch::jit::Module &descriptor);

  int size() const { return n_components; }                 // K, components of B
  int density_size() const { return 2 * n_u; }               // U_i: n_u real parts, then n_u imaginary parts
  int sums_size() const { return 2 * (int) groups.size(); }  // the groups' sums z (Re, Im), kept for adjoint
  int twojmax() const { return two_jmax; }

  // A batch holds LANES atoms, entry-major: u (density_size(), LANES), z (sums_size(), LANES),
  // y (density_size(), LANES); b and beta are (count, K) rows of atoms, count <= LANES.
  // U_i of an atom into lane `lane` of u, from its edges' vectors (n, 3) A = x_dst - x_src; edges with
  // r >= cutoff or r <= 1e-10 count 0
  void density(const double *vectors, int n, double *u, int lane);
  // B of the batch's first `count` atoms (bzero subtracted if the module does), and z for adjoint
  void components(const double *u, int count, double *b, double *z);
  // Y = d(sum_k beta_k B_k)/dU_i of the batch's first `count` atoms (the other lanes: 0)
  void adjoint(const double *u, const double *z, const double *beta, int count, double *y);
  // g (n, 3) = d(sum_k beta_k B_k)/dv for each edge vector v (n, 3) of the atom in lane `lane` of y
  void edge_gradients(const double *vectors, int n, const double *y, int lane, double *g);

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
  // one edge: the Cayley-Klein parameters (conjugated) a = ar + i ai, b = br + i bi, the switching weight
  // f_c, and their derivatives with respect to the edge vector
  struct EdgeGeometry {
    double ar, ai, br, bi, fc;
    double dar[3], dai[3], dbr[3], dbi[3], dfc[3];
  };
  // the geometry of edge vector v (3,), with d/dv if asked; false if the edge counts 0
  bool edge_geometry(const double *v, bool derivatives, EdgeGeometry &edge) const;
  // lanes [0, count) of the parameters from edges[0, count); the other lanes 0 (their U^j vanish)
  void load_lanes(const EdgeGeometry *edges, int count);
  // U^j of the EDGE_LANES edges (their top rows 2 m' <= j, and row (j+1)/2 of odd j, which U^{j+1} reads);
  // visit(i, re, im) for each top entry, i its index in U_i
  template <class Visit> void edge_wigner(Visit &&visit);
  // dE/d(ar, ai, br, bi) (4) of the EDGE_LANES edges from w = dE/dU on the top rows (folded_re,
  // folded_im, the same for every lane), by reverse mode through edge_wigner (its U^j must be current)
  void edge_wigner_backward(EdgeLanes grad_ab[4]);
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

  // the current EDGE_LANES edges: parameters a, b (conjugated Cayley-Klein), weight f_c
  EdgeLanes ar, ai, br, bi, fc;
  // buffers of vectors, held as doubles (entries x lanes): the edges' U^j, level j from edge_offset[j]
  // (top rows, and row (j+1)/2 of odd j < twojmax); the adjoints dE/dU^j of a level and the level below
  std::vector<int> edge_offset;
  std::vector<double> edge_re, edge_im, adj_re, adj_im, adj_prev_re, adj_prev_im;
  // scratch: an atom's U_i summed by lanes (2 n_u EdgeLanes), then its 2 n_u entries; a batch's B and
  // beta by lanes (K Lanes)
  std::vector<double> density_lanes, density_atom, b_lanes, beta_lanes;
  std::vector<EdgeGeometry> geometry;    // EDGE_LANES edges
  // an atom's Y folded onto the top rows (the bottom rows are conjugates of them)
  std::vector<double> folded_re, folded_im;
};

}    // namespace eip2nn

#endif
