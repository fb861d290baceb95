/* -*- c++ -*- ----------------------------------------------------------
   KLIFF's Behler-Parrinello symmetry functions of eip2nn's
   TorchSymmetryFunctions (eip2nn/nn/sf_torch.py) in plain C++ (float64), for
   pair_style eip2nn's native path: per atom the functions G (K,) from its
   edges, and, for weights beta = dE/dG (K,) from the network, dE/dv of each
   of its edge vectors (reverse mode, by hand).

   Conventions (sf_torch.py's docstring): fc(r) = (cos(pi r / r_c) + 1) / 2
   below r_c, else 0; G1 = sum_j fc_ij; G2 = sum_j exp(-eta (r_ij - R_s)^2) fc_ij;
   G3 = sum_j cos(kappa r_ij) fc_ij; over each unordered pair of neighbours
   j < k once, with c = cos(theta_ijk) and A = 2^(1-zeta) (1 + lambda c)^zeta
   (0 where 1 + lambda c <= 0):
     G4 = sum A exp(-eta (r_ij^2 + r_ik^2 + r_jk^2)) fc_ij fc_ik fc_jk,
     G5 = sum A exp(-eta (r_ij^2 + r_ik^2)) fc_ij fc_ik,
   r_jk = |v_ik - v_ij|; neighbours of every element count alike. The tables
   (g1 ... g5, kliff_order) are read from the scripted module; the output
   columns are in KLIFF's order.

   SIMD without intrinsics, as native_bispectrum: the pairs (a, b) of one
   edge a go through the same arithmetic PAIR_LANES b at a time, one per lane
   of a GCC/Clang vector, with exp and cos/sin by polynomials accurate to a
   few ulp (the values equal the TorchScript ones to ~1e-15 relative).
------------------------------------------------------------------------- */

#ifndef EIP2NN_NATIVE_SYMMETRY_FUNCTIONS_H
#define EIP2NN_NATIVE_SYMMETRY_FUNCTIONS_H

#include <torch/script.h>

#include <string>
#include <vector>

namespace eip2nn {

constexpr int PAIR_LANES = 8;    // neighbour pairs (a, b) of one atom, b = b0 ... b0 + 7, in one SIMD vector

class NativeSymmetryFunctions {
 public:
  // the tables (buffers g1 ... g5, kliff_order) and cutoff of a scripted TorchSymmetryFunctions;
  // std::runtime_error naming the table if one is missing or inconsistent
  explicit NativeSymmetryFunctions(const torch::jit::Module &descriptor);

  int size() const { return n_functions; }    // K
  // a description for the log: "51 functions (8 G2, 43 G4)"
  std::string summary() const;

  // G (K,) in KLIFF's order of an atom whose edges have vectors (n, 3) A = x_neighbour - x_atom;
  // edges with r >= cutoff or r <= 1e-10 count 0
  void values(const double *vectors, int n, double *g);
  // g (n, 3) = d(sum_k beta_k G_k)/dv for each edge vector v (n, 3) of the atom, beta (K,) in KLIFF's order
  void edge_gradients(const double *vectors, int n, const double *beta, double *g);

 private:
  // the atom's edges that count (r < cutoff) into the per-edge arrays below
  void load_edges(const double *vectors, int n);
  // per counted edge t: dE/dr of the radial functions (G1-G3) for beta in block order
  double radial_gradient(int t, const double *beta_block) const;
  // the factors of the neighbour pairs (a, b0 + l), l < PAIR_LANES, into the pair arrays below
  inline void pair_factors(int a, int b0, bool derivative);

  double cutoff;
  int n_functions;
  // block order (sf_torch's KINDS): g1 | g2 | g3 | g4 | g5; column of block entry i in KLIFF's order
  int n1, n2, n3, n4, n5;
  std::vector<int> kliff_column;       // (K,) output column of each block entry
  std::vector<double> g2_eta, g2_rs, g3_kappa;
  // distinct (zeta, lambda) of G4 and G5: 2^(1-zeta), zeta, lambda, zeta as an integer (or -1: not one)
  std::vector<double> angle_scale, angle_zeta, angle_lambda;
  std::vector<int> angle_int_zeta;
  std::vector<double> eta4, eta5;      // distinct eta of G4, of G5 (A^-2)
  std::vector<int> g4_angle, g4_eta, g5_angle, g5_eta;    // per G4 (G5) function: its (zeta, lambda), eta

  // the current atom's counted edges, m of them, padded with zeros to stride = m + PAIR_LANES so that a batch
  // of lanes may run past the last edge: original index, vector components, r, 1/r, fc,
  // dfc/dr; exp(-eta4_q r^2) at [q * stride + t], exp(-eta5_q r^2) likewise
  int m = 0, stride = 0;
  std::vector<int> edge_index;
  std::vector<double> ex, ey, ez, er, einv, efc, edfc, e4, e5;
  // the current batch of pairs, one pair per lane (PAIR_LANES doubles per entry): cos(theta), r_jk, fc(r_jk),
  // dfc/dr(r_jk) (both 0 where r_jk >= cutoff); A_p, dA_p/dc; X4_q = exp(-eta4_q (r_a^2 + r_b^2 + r_jk^2)),
  // X5_q = exp(-eta5_q (r_a^2 + r_b^2))
  std::vector<double> pc, prjk, pfc, pdfc, pa, pda, x4, x5;
  // scratch: G (block order) summed by lanes, beta in block order, dE/dv of the counted edges (x, y, z)
  std::vector<double> sums, block, beta_block, gx, gy, gz;
};

}    // namespace eip2nn

#endif
