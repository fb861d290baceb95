/* -*- c++ -*- ----------------------------------------------------------
   pair_style eip2nn: a LAMMPS pair style (loaded as a plugin) that evaluates
   an eip2nn TorchScript model ("eip2nn-lammps/1" contract) through libtorch.

   Model contract (see pair_eip2nn.cpp for details):
     forward(species (n,) int64, edge_src (E,) int64, edge_dst (E,) int64,
             edge_vectors (E,3) float64) -> per-node energies (n,) float64, eV
   with edge_vectors = x[dst] - x[src] for every ordered pair within the cutoff.
   A bispectrum or symmetry-function model (json "native_descriptor":
   "bispectrum" or "symmetry_functions") has its descriptor computed here in
   C++ (native_bispectrum.h, native_symmetry_functions.h) and only
     energies_from_descriptor(species (n,) int64, B (n, K)) -> (n,)
   run in torch, unless `pair_style eip2nn native no`. A SchNet with a filter
   table and "native_dense": "schnet" runs its dense layers in C++ too
   (native_schnet.h), unless `native no`.
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_EIP2NN_H
#define LMP_PAIR_EIP2NN_H

#include "pair.h"

#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairEIP2NN : public Pair {
 public:
  PairEIP2NN(class LAMMPS *);
  ~PairEIP2NN() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;

 protected:
  void allocate();
  void load_model(const std::string &path);
  void build_graph();
  void choose_descriptor_path();
  void choose_message_passing_path();
  void build_local_graph();
  void compute_layerwise();
  void tally_edges(const double *grad, const double *vec);

  // model (a torch::jit::Module, kept out of this header) and its metadata
  struct Model;
  std::unique_ptr<Model> model;
  bool model_loaded;
  std::string model_path;
  std::vector<std::string> species_names;    // model species, index order
  double cutoff;                             // edge cutoff (A)
  double cutoff_sq;
  double interaction_range;                  // how far an atom's energy reaches (A)
  int nhops;                                 // ceil(interaction_range / cutoff)
  bool model_float32;                        // dtype "float32" (default float64)
  int nthreads;                              // torch intra-op threads (0 = leave as is)
  bool per_atom_descriptor;                  // an atom's energy needs only its own edges (descriptor models)
  int chunk_user;                            // owned atoms per model call for such a model (0 = all at once),
                                             // as pair_style's chunk keyword gave it; -1 if not given
  int chunk_model;                           // the same, as the model file suggests (default 128)
  int native_user;                           // pair_style's native keyword: 1 yes, 0 no, -1 not given
  std::string native_descriptor;             // the model file's "native_descriptor" ("" if none)
  bool native_active;                        // this run computes the descriptor in C++ (init_style decides)
  int mp_layers;                             // message-passing layers the file exports one by one (0: none)
  int feature_width;                         // features per atom between those layers
  int layerwise_user;                        // pair_style's layerwise keyword: 1 yes, 0 no, -1 not given
  bool layerwise_active;                     // this run exchanges features layer by layer (init_style decides)
  int filter_user;                           // pair_style's filter keyword: 1 table, 0 network, -1 not given
  double filter_spacing;                     // A: the file's filter table's spacing (0: the file has none)
  bool filter_active;                        // layer by layer with the tabulated filter (init_style decides)
  std::string native_dense;                  // the model file's "native_dense" ("schnet": its dense layers as
                                             // numbers; "" if none)
  bool native_dense_active;                  // with the table: the dense layers in C++ (init_style decides)
  // per LAMMPS atom, its features' row: below nlocal, the owned atom it is (an image of), whose row a ghost reads
  // (on one rank every ghost's: there is no exchange); for a ghost of another rank's atom that a node has as a
  // neighbour, nlocal + that atom's index among foreign_row_atom (its images share the row); -1 for other ghosts.
  // From a forward comm of image_code (owner's rank << 32 | its index there) after each neighbour-list build
  // (image_owner_build: neighbor->ncalls then, -1 before the first)
  std::vector<int64_t> image_code;
  std::vector<int> feature_row;
  std::vector<int> foreign_row_atom;         // per row of another rank's atom, one ghost that images it
  bigint image_owner_build;
  // the feature exchange (several ranks, MPI point to point on exchange_comm): rows of feature_width values in
  // the model's dtype (exchange_row_bytes, one exchange_row_type each). Rows nlocal + recv_first[p] ...
  // + recv_count[p] - 1 are rank recv_rank[p]'s atoms, in order of their index there; this rank sends rank
  // send_rank[p] the rows of its atoms send_atom[send_first[p]] ... (send_count[p] of them)
  std::vector<int> recv_rank, recv_first, recv_count;
  std::vector<int> send_rank, send_first, send_count, send_atom;
  std::vector<char> exchange_buffer;
  std::vector<MPI_Request> exchange_requests;
  size_t exchange_row_bytes;
  MPI_Comm exchange_comm;
  MPI_Datatype exchange_row_type;
  void plan_feature_exchange();
  void exchange_rows_forward(void *rows);
  void exchange_rows_reverse(void *rows);
  void refresh_image_owners();
  double cutghost_set;                       // comm->cutghostuser as this style last set it
  double cutghost_user;                      // comm->cutghostuser as the user set it

  std::vector<int> type2species;             // LAMMPS type (1-based) -> species index or -1

  // per-step graph, in LAMMPS atom indices; nodes 0..nlocal_nodes-1 are owned atoms
  std::vector<int> hop;                      // per LAMMPS atom: graph distance from owned atoms
  std::vector<int> node_of;                  // per LAMMPS atom: node index or -1
  std::vector<int> node_atom;                // per node: LAMMPS atom index
  std::vector<int> edge_src_atom, edge_dst_atom;
  std::vector<int> edge_src_row;             // layer by layer: per edge, its source's row among node_atom
  std::vector<int> edge_interval;            // with the filter table: per edge (before the sort), its interval
  int64_t npair_edges;                       // layer by layer with the table: the first edges, each one for
                                             // itself and its reverse
  bool nodes_are_atoms;                      // layer by layer: node k is owned atom k, for every owned atom
  // build_local_graph's and order_edges_by_interval's scratch, kept between steps
  std::vector<int> single_src_atom, single_dst_atom, single_src_row, single_interval;
  std::vector<int> interval_count, sorted_src_atom, sorted_dst_atom, sorted_src_row;
  void order_edges_by_interval(int64_t begin, int64_t end);
  int nlocal_nodes;
};

}    // namespace LAMMPS_NS

#endif
