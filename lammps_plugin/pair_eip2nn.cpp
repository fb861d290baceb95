/* ----------------------------------------------------------------------
   pair_style eip2nn: evaluate an eip2nn TorchScript model in LAMMPS.

     plugin load /path/to/eip2nnplugin.so
     pair_style eip2nn [threads N] [chunk N] [native yes|no] [layerwise yes|no]
                       [filter table|network]
                                        (threads: torch intra-op threads per rank)
     pair_coeff * * model.pt Si Ge      (element of each atom type, or NULL
                                         for types left to pair_style hybrid)
   Requires units metal and newton pair on. Runs on the CPU.

   Model file: torch.jit.save(module, path, _extra_files={"eip2nn.json": json})
   json keys: "format" = "eip2nn-lammps/1", "species" (element symbols, index
   order), "cutoff" (A), "interaction_range" (A; = cutoff for a local model,
   cutoff * depth for message passing), "units" = "metal", "dtype" = "float64".

   forward(species, edge_src, edge_dst, edge_vectors) -> per-node energies (eV).
   The graph handed to the model holds the owned atoms (nodes 0..nlocal-1) and
   the ghost atoms they need. A ghost that is a periodic image of an atom owned
   by this rank is that atom's node when LAMMPS keeps an atom map (`atom_modify
   map yes`, before the box): on one rank the graph is then the periodic graph
   eip2nn trains on. Other ghosts (owned by other ranks, or all of them without
   a map) are nodes of their own. Edge vectors are the actual ones, so periodic
   images and cells smaller than twice the cutoff work either way. Edges are all
   ordered pairs (i, j) closer than the cutoff among the nodes within
   depth-1 hops of an owned atom, plus their reverses, where
   depth = ceil(interaction_range / cutoff); edge vector = x[j] - x[i].

   E = sum of the energies of the owned atoms; g = dE/d(edge_vectors) by
   autograd; f[src] += g, f[dst] -= g (on ghosts too: newton pair on, LAMMPS
   sums ghost forces back to their owners); virial = -sum_edges v (x) g, per
   atom half to each end (stress/atom) or, for a descriptor model, whole to the
   source atom whose energy the edge enters (centroid/stress/atom: with a
   many-body energy the heat flux needs that form; message passing has none).

   Native descriptor: a model file whose json says "native_descriptor":
   "bispectrum" (eip2nn's bispectrum backbone) or "symmetry_functions" (its
   symmetry-function backbone) has its descriptor B computed here in C++
   (native_bispectrum.cpp, native_symmetry_functions.cpp, from the tables of
   the module's backbone.descriptor) and only energies_from_descriptor(species, B)
   run in torch: with beta = dE/dB from autograd, dE/dv of each edge follows
   in C++ (reverse mode). Float64 throughout; a float32 model gets B cast to
   float32 for its network and beta back. `native no` runs the module's
   forward instead (the same numbers to round-off, several times slower).

   Message passing, layer by layer (the default for a file that exports its
   layers: "message_passing_layers" > 0 in the json, as eip2nn's SchNet does):
   only owned atoms have features; the edges are the owned atoms' own (owned
   atom -> each neighbour < cutoff, ghost or not). In each layer every owned
   atom computes what it sends its neighbours (layer_inputs), each rank sends
   the rows of its atoms that other ranks have as neighbours (as
   pair_allegro/MACE's ML-IAP exchange features; in the model's dtype, point
   to point, one row per atom however many of its images are ghosts there),
   and the owned atoms' features are updated from their edges (layer_update):
   the ghost shell is one cutoff (+ skin) deep and no rank evaluates another's
   atoms, nor any dense part on a ghost. The gradient goes back the same way:
   through each update by autograd, the rows of other ranks' atoms back to
   their owners and summed there, then through layer_inputs. A ghost that is
   a periodic image of an atom this rank owns is read from that atom's row:
   on one rank there is no communication at all. `pair_style eip2nn layerwise
   no` runs the whole forward on a deep ghost shell instead (below). A file that
   tabulates its filters ("filter_table" in the json; eip2nn's SchNet export
   does by default) has each layer's convolution done here instead of by
   layer_update: one pass over the edges from the table (tabulated_filter.h)
   gives the aggregated messages, layer_output the new features, and the
   gradient comes back the same way (`filter network`: layer_update). With the
   table, a file that also carries its dense layers as numbers ("native_dense":
   "schnet") runs them here too (native_schnet.h: forward and backward by hand,
   no TorchScript or autograd in the step; the first layer's inputs, which
   depend on the species alone, from a per-species table with no exchange);
   `native no` runs the module's layer_inputs and layer_output instead.

   Otherwise, for depth > 1 the pair style needs the neighbours of ghost atoms: it asks
   for a full neighbour list with ghosts and raises the ghost (communication)
   cutoff to interaction_range + skin (as pair styles tip4p do with
   comm->cutghostuser), so that every atom within depth-1 hops of an owned
   atom has its complete neighbourhood on this rank.
------------------------------------------------------------------------- */

#include "pair_eip2nn.h"

#include "native_bispectrum.h"
#include "native_schnet.h"
#include "native_symmetry_functions.h"
#include "tabulated_filter.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace LAMMPS_NS;

struct PairEIP2NN::Model {
  torch::jit::Module module;
  // the native descriptor (at most one of them), once init_style chose it
  std::unique_ptr<eip2nn::NativeBispectrum> bispectrum;
  std::unique_ptr<eip2nn::NativeSymmetryFunctions> symmetry_functions;
  bool has_native() const { return bispectrum || symmetry_functions; }
  // a SchNet's filters tabulated, per layer in the layout of eip2nn::blocked_filter_table, in the model's dtype
  // (undefined if none); the file's (layers, intervals, coefficients: 6, quintic, or 4, cubic in older files,
  // features)
  torch::Tensor filter_table;
  int64_t filter_intervals = 0, filter_coefficients = 0;
  // its dense layers in C++, once init_style chose them
  std::unique_ptr<eip2nn::NativeSchNet> schnet;
};

static const char *const FORMAT = "eip2nn-lammps/1";
// owned atoms per network call of a native descriptor unless `chunk N` says (memory: the bispectrum ~10 kB
// per atom at twojmax 8, the symmetry functions K doubles; at 512 Si atoms, 256 a call takes the bispectrum
// model's network from ~25% of the time at 32 to ~10%)
static const int NATIVE_CHUNK_ATOMS = 256;
static const char *const META_FILE = "eip2nn.json";

// a "native_descriptor" of a model file that this plugin computes in C++
static bool native_descriptor_known(const std::string &name)
{
  return name == "bispectrum" || name == "symmetry_functions";
}

/* ----------------------------------------------------------------------
   glibc's malloc gave torch's large per-step tensors (megabytes to tens of
   megabytes at a few thousand atoms) fresh pages every step: blocks above
   its mmap threshold are mapped and unmapped, and free memory at the top of
   the heap goes back to the system once it exceeds the trim threshold, so
   the next step faults it in again. Raising both (the mmap threshold to the
   most glibc allows, 32 MB; the trim threshold to 1 GB) keeps the memory for
   the next step. Once per process, and not where the user tunes malloc
   (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES) or sets
   EIP2NN_MALLOC_TUNING=0. Returns what it did, for the log ("" if nothing).
------------------------------------------------------------------------- */

static std::string keep_freed_memory()
{
#if defined(__GLIBC__)
  static bool done = false;
  if (done) return "";
  done = true;
  const char *opt_out = std::getenv("EIP2NN_MALLOC_TUNING");
  if (opt_out && std::string(opt_out) == "0") return "";
  for (const char *name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"})
    if (std::getenv(name)) return "";
  const int mmap_threshold = 32 * 1024 * 1024;
  const int trim_threshold = 1024 * 1024 * 1024;
  if (mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1)
    return "eip2nn: malloc keeps freed memory for the next step (mmap threshold 32 MB, trim threshold 1 GB; "
           "EIP2NN_MALLOC_TUNING=0 leaves malloc as it is)\n";
#endif
  return "";
}

/* ---------------------------------------------------------------------- */

PairEIP2NN::PairEIP2NN(LAMMPS *lmp) : Pair(lmp)
{
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  single_enable = 0;
  no_virial_fdotr_compute = 1;    // virial tallied from the edges
  centroidstressflag = CENTROID_NOTAVAIL;
  ghostneigh = 0;
  cutghost = nullptr;

  model_loaded = false;
  cutoff = cutoff_sq = interaction_range = 0.0;
  nhops = 1;
  model_float32 = false;
  nthreads = 0;
  per_atom_descriptor = false;
  chunk_user = -1;
  chunk_model = 128;
  native_user = -1;
  native_active = false;
  nlocal_nodes = 0;
  npair_edges = 0;
  nodes_are_atoms = false;
  mp_layers = feature_width = 0;
  layerwise_user = -1;
  layerwise_active = false;
  filter_user = -1;
  filter_spacing = 0.0;
  filter_active = false;
  native_dense_active = false;
  image_owner_build = -1;
  exchange_row_bytes = 0;
  exchange_comm = MPI_COMM_NULL;
  exchange_row_type = MPI_DATATYPE_NULL;
  cutghost_set = -1.0;
  cutghost_user = 0.0;
}

/* ---------------------------------------------------------------------- */

PairEIP2NN::~PairEIP2NN()
{
  if (copymode) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    if (exchange_row_type != MPI_DATATYPE_NULL) MPI_Type_free(&exchange_row_type);
    if (exchange_comm != MPI_COMM_NULL) MPI_Comm_free(&exchange_comm);
  }
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

/* ---------------------------------------------------------------------- */

void PairEIP2NN::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
}

/* ----------------------------------------------------------------------
   pair_style eip2nn [threads N] [chunk N]
   chunk: owned atoms per model call for a model whose atom energies need only
   their own edges (descriptor models): memory stays bounded whatever the
   system size (0 = all atoms in one call; message passing is never chunked).
   Without it, the model file's "chunk_atoms" (the best size for its descriptor), else 128; the
   native descriptor: NATIVE_CHUNK_ATOMS (its memory per atom is small, and the network costs
   less in fewer, larger calls).
   native: compute the model's descriptor in C++ if its file allows it (default
   yes; "yes" with a file that does not allow it is an error); for a SchNet run
   layer by layer with its filter table: its dense layers in C++ as well.
   layerwise: a message-passing model whose file exports its layers exchanges
   features with the neighbouring ranks after each layer (default yes; "no": the
   deep ghost shell; "yes" with a file that does not allow it is an error).
   filter: layer by layer, a SchNet whose file tabulates its filters convolves
   with the table in one pass over the edges (default "table"; "network": the
   file's filter network, in torch; "table" with a file that has none, or with
   layerwise no, is an error).
------------------------------------------------------------------------- */

void PairEIP2NN::settings(int narg, char **arg)
{
  chunk_user = -1;
  native_user = -1;
  layerwise_user = -1;
  filter_user = -1;
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "threads") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style eip2nn threads", error);
      nthreads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nthreads < 1) error->all(FLERR, "pair_style eip2nn: threads must be >= 1");
      iarg += 2;
    } else if (strcmp(arg[iarg], "chunk") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style eip2nn chunk", error);
      chunk_user = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (chunk_user < 0) error->all(FLERR, "pair_style eip2nn: chunk must be >= 0");
      iarg += 2;
    } else if (strcmp(arg[iarg], "native") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style eip2nn native", error);
      native_user = utils::logical(FLERR, arg[iarg + 1], false, lmp);
      iarg += 2;
    } else if (strcmp(arg[iarg], "layerwise") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style eip2nn layerwise", error);
      layerwise_user = utils::logical(FLERR, arg[iarg + 1], false, lmp);
      iarg += 2;
    } else if (strcmp(arg[iarg], "filter") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style eip2nn filter", error);
      if (strcmp(arg[iarg + 1], "table") == 0)
        filter_user = 1;
      else if (strcmp(arg[iarg + 1], "network") == 0)
        filter_user = 0;
      else
        error->all(FLERR, "pair_style eip2nn filter: expected 'table' or 'network', got '{}'", arg[iarg + 1]);
      iarg += 2;
    } else {
      error->all(FLERR,
                 "Unknown pair_style eip2nn keyword: {} (usage: pair_style eip2nn [threads N] [chunk N] "
                 "[native yes|no] [layerwise yes|no] [filter table|network])",
                 arg[iarg]);
    }
  }
  if (nthreads > 0) at::set_num_threads(nthreads);
}

/* ----------------------------------------------------------------------
   read the TorchScript model and its eip2nn.json metadata
------------------------------------------------------------------------- */

void PairEIP2NN::load_model(const std::string &path)
{
  std::unordered_map<std::string, std::string> extra{{META_FILE, ""}};
  std::string msg;
  try {
    auto loaded = std::make_unique<Model>();
    loaded->module = torch::jit::load(path, torch::kCPU, extra);
    loaded->module.eval();
    model = std::move(loaded);
  } catch (const c10::Error &e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception &e) {
    msg = e.what();
  }
  if (!msg.empty())
    error->all(FLERR, "pair_coeff eip2nn: cannot load TorchScript model {}: {}", path, msg);

  const std::string &text = extra[META_FILE];
  if (text.empty())
    error->all(FLERR,
               "pair_coeff eip2nn: {} has no '{}' extra file; export the model with "
               "torch.jit.save(module, path, _extra_files={{'{}': json}})",
               path, META_FILE, META_FILE);

  std::string format, units = "metal", dtype = "float64", backbone, native, dense;
  std::vector<std::string> species;
  double cut = 0.0, range = -1.0;
  int per_atom = -1;    // "per_atom_descriptor" in the metadata; files before it: symmetry functions only
  int chunk = 128;      // "chunk_atoms" in the metadata
  int layers = 0, width = 0;    // "message_passing_layers", "feature_width"
  double spacing = 0.0;         // "filter_table": {"spacing": ...}
  try {
    json meta = json::parse(text);
    format = meta.at("format").get<std::string>();
    species = meta.at("species").get<std::vector<std::string>>();
    cut = meta.at("cutoff").get<double>();
    if (meta.contains("interaction_range")) range = meta.at("interaction_range").get<double>();
    if (meta.contains("units")) units = meta.at("units").get<std::string>();
    if (meta.contains("dtype")) dtype = meta.at("dtype").get<std::string>();
    if (meta.contains("backbone")) backbone = meta.at("backbone").get<std::string>();
    if (meta.contains("per_atom_descriptor")) per_atom = meta.at("per_atom_descriptor").get<bool>() ? 1 : 0;
    if (meta.contains("chunk_atoms")) chunk = meta.at("chunk_atoms").get<int>();
    if (meta.contains("native_descriptor")) native = meta.at("native_descriptor").get<std::string>();
    if (meta.contains("native_dense")) dense = meta.at("native_dense").get<std::string>();
    if (meta.contains("message_passing_layers")) layers = meta.at("message_passing_layers").get<int>();
    if (meta.contains("feature_width")) width = meta.at("feature_width").get<int>();
    if (meta.contains("filter_table")) spacing = meta.at("filter_table").at("spacing").get<double>();
  } catch (const std::exception &e) {
    msg = e.what();
  }
  if (!msg.empty())
    error->all(FLERR, "pair_coeff eip2nn: bad '{}' in {}: {}", META_FILE, path, msg);
  if (format != FORMAT)
    error->all(FLERR, "pair_coeff eip2nn: {} has format '{}', this pair style reads '{}'", path, format,
               FORMAT);
  if (units != "metal")
    error->all(FLERR, "pair_coeff eip2nn: {} is in units '{}', only 'metal' is supported", path, units);
  if (dtype != "float64" && dtype != "float32")
    error->all(FLERR, "pair_coeff eip2nn: {} has dtype '{}', expected 'float64' or 'float32'", path,
               dtype);
  if (species.empty()) error->all(FLERR, "pair_coeff eip2nn: {} lists no species", path);
  if (!(cut > 0.0)) error->all(FLERR, "pair_coeff eip2nn: {} has cutoff {} <= 0", path, cut);
  if (range < 0.0) range = cut;
  if (chunk < 0) error->all(FLERR, "pair_coeff eip2nn: {} has chunk_atoms {} < 0", path, chunk);
  if (range < cut)
    error->all(FLERR, "pair_coeff eip2nn: {} has interaction_range {} < cutoff {}", path, range, cut);
  if (layers < 0 || width < 0 || (layers > 0 && width == 0))
    error->all(FLERR, "pair_coeff eip2nn: {} has message_passing_layers {} and feature_width {}", path, layers,
               width);

  species_names = species;
  cutoff = cut;
  cutoff_sq = cut * cut;
  interaction_range = range;
  nhops = std::max(1, (int) std::ceil(range / cut - 1e-9));
  model_float32 = (dtype == "float32");
  per_atom_descriptor = (per_atom >= 0) ? (per_atom == 1) : (backbone == "symmetry_functions");
  // centroid (per-atom, asymmetric) virial: an atom's energy depends on its own edges only (a descriptor model)
  centroidstressflag = (per_atom_descriptor && nhops == 1) ? CENTROID_AVAIL : CENTROID_NOTAVAIL;
  chunk_model = chunk;
  native_descriptor = native;
  native_active = false;
  mp_layers = layers;
  feature_width = width;
  layerwise_active = false;
  filter_spacing = 0.0;
  filter_active = false;
  native_dense = dense;
  native_dense_active = false;
  if (spacing > 0.0) {
    torch::Tensor table;
    if (model->module.hasattr("filter_table")) table = model->module.attr("filter_table").toTensor();
    const torch::ScalarType want = model_float32 ? torch::kFloat32 : torch::kFloat64;
    if (!table.defined() || table.dim() != 4 || table.size(0) != layers
        || (table.size(2) != 4 && table.size(2) != 6) || table.size(3) != width || table.scalar_type() != want)
      error->all(FLERR, "pair_coeff eip2nn: {} says it tabulates its filters, but its filter_table is {} (expected "
                        "({}, intervals, 6 or 4 coefficients, {}) of its dtype); export it again", path,
                 table.defined() ? c10::str(table.sizes(), " ", table.scalar_type()) : std::string("missing"),
                 layers, width);
    std::vector<torch::Tensor> per_layer;    // each in the passes' layout (tabulated_filter.h)
    for (int k = 0; k < layers; k++) per_layer.push_back(eip2nn::blocked_filter_table(table[k].contiguous()));
    model->filter_table = torch::stack(per_layer);
    model->filter_coefficients = table.size(2);
    model->filter_intervals = table.size(1);
    filter_spacing = spacing;
  }
  model_path = path;
  model_loaded = true;
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt El1 El2 ... (one element or NULL per atom type)
------------------------------------------------------------------------- */

void PairEIP2NN::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "Incorrect args for pair coefficients: expected 'pair_coeff * * <model.pt> "
               "<element of each of the {} atom types>', got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair coefficients: pair style eip2nn needs 'pair_coeff * *'");

  load_model(arg[2]);

  type2species.assign(ntypes + 1, -1);
  std::string known;
  for (const auto &s : species_names) known += (known.empty() ? "" : " ") + s;
  for (int itype = 1; itype <= ntypes; itype++) {
    const char *el = arg[2 + itype];
    if (strcmp(el, "NULL") == 0) continue;
    int idx = -1;
    for (int k = 0; k < (int) species_names.size(); k++)
      if (species_names[k] == el) idx = k;
    if (idx < 0)
      error->all(FLERR,
                 "pair_coeff eip2nn: element '{}' given for atom type {} is not a species of model "
                 "{} (its species: {})",
                 el, itype, model_path, known);
    type2species[itype] = idx;
  }

  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++)
      if (type2species[i] >= 0 && type2species[j] >= 0) {
        setflag[i][j] = 1;
        count++;
      } else
        setflag[i][j] = 0;
  if (count == 0) error->all(FLERR, "Incorrect args for pair coefficients: no element given");

  if (comm->me == 0) {
    utils::logmesg(lmp,
                   "eip2nn: model {} species [{}] cutoff {} interaction_range {} (message-passing "
                   "depth {}) dtype {}\n",
                   model_path, known, cutoff, interaction_range, nhops,
                   model_float32 ? "float32" : "float64");
    if (!native_descriptor.empty() && !native_descriptor_known(native_descriptor))
      utils::logmesg(lmp, "eip2nn: native descriptor '{}' is unknown to this plugin: the model's TorchScript "
                          "computes it\n", native_descriptor);
  }
}

/* ---------------------------------------------------------------------- */

void PairEIP2NN::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "Pair style eip2nn requires 'units metal' (the model works in eV and A), not '{}'",
               update->unit_style);
  if (force->newton_pair == 0) error->all(FLERR, "Pair style eip2nn requires newton pair on");
  if (!model_loaded) error->all(FLERR, "Pair style eip2nn: no model loaded (pair_coeff missing)");
  choose_descriptor_path();
  choose_message_passing_path();
  const std::string malloc_note = keep_freed_memory();
  if (comm->me == 0 && !malloc_note.empty()) utils::logmesg(lmp, malloc_note);

  if (layerwise_active) {
    // one cutoff of ghosts, their features sent by their owners: undo a ghost cutoff this style raised before
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
    comm_forward = 1;    // LAMMPS's comm carries only each atom's owner (refresh_image_owners)
    image_owner_build = -1;
    // under pair_style hybrid the comm buffers are sized by the hybrid's sizes, which it took from its
    // sub-styles at pair_style time, before the model was known: raise them (comm->init runs after this)
    Pair *top = force->pair;
    if (top && top != this) top->comm_forward = std::max(top->comm_forward, comm_forward);
    // the features go point to point between ranks (exchange_rows_forward), on a communicator of their own
    exchange_row_bytes = (size_t) feature_width * (model_float32 ? sizeof(float) : sizeof(double));
    if (comm->nprocs > 1) {
      if (exchange_comm == MPI_COMM_NULL) MPI_Comm_dup(world, &exchange_comm);
      if (exchange_row_type != MPI_DATATYPE_NULL) MPI_Type_free(&exchange_row_type);
      MPI_Type_contiguous((int) exchange_row_bytes, MPI_BYTE, &exchange_row_type);
      MPI_Type_commit(&exchange_row_type);
    }
    if (cutghost_set >= 0.0 && comm->cutghostuser == cutghost_set) comm->cutghostuser = cutghost_user;
    cutghost_set = -1.0;
  } else if (nhops > 1) {
    // message passing: neighbours of ghost atoms are needed, and ghosts out to
    // interaction_range (+ skin, as for any neighbour list) around the sub-domain
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "Pair style eip2nn with a message-passing model needs comm_modify mode single");
    ghostneigh = 1;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // the user's own comm_modify cutoff is kept when larger; a value this pair
    // style set itself in an earlier run is replaced (the skin may have changed)
    const double mincut = interaction_range + neighbor->skin;
    if (comm->cutghostuser != cutghost_set) cutghost_user = comm->cutghostuser;
    const double want = std::max(cutghost_user, mincut);
    if (comm->cutghostuser != want) {
      if (comm->me == 0)
        utils::logmesg(lmp,
                       "eip2nn: setting the communication cutoff to {:.8} (interaction_range {} + "
                       "skin {})\n",
                       want, interaction_range, neighbor->skin);
      comm->cutghostuser = want;
    }
    cutghost_set = want;
  } else {
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }
}

/* ----------------------------------------------------------------------
   native descriptor or the module's forward: native unless `native no`, if
   the file names a descriptor this plugin computes and the model is local
   (depth 1); reads the tables on first use
------------------------------------------------------------------------- */

void PairEIP2NN::choose_descriptor_path()
{
  const bool possible = native_descriptor_known(native_descriptor) && per_atom_descriptor && nhops == 1;
  // a message-passing model's `native` is its dense layers' (choose_message_passing_path)
  if (native_user == 1 && !possible && mp_layers == 0)
    error->all(FLERR,
               "pair_style eip2nn native yes: model {} has no descriptor this plugin computes natively "
               "(native_descriptor '{}', per-atom descriptor {}, depth {}); export it again with this "
               "eip2nn, or leave native out",
               model_path, native_descriptor, per_atom_descriptor ? "yes" : "no", nhops);
  native_active = possible && native_user != 0;
  if (!native_active || model->has_native()) return;

  std::string msg, what;
  try {
    torch::jit::Module backbone = model->module.attr("backbone").toModule();
    torch::jit::Module descriptor = backbone.attr("descriptor").toModule();
    if (native_descriptor == "bispectrum") {
      model->bispectrum = std::make_unique<eip2nn::NativeBispectrum>(descriptor);
      what = fmt::format("bispectrum (twojmax {}, {} components)", model->bispectrum->twojmax(),
                         model->bispectrum->size());
    } else {
      model->symmetry_functions = std::make_unique<eip2nn::NativeSymmetryFunctions>(descriptor);
      what = "symmetry functions, " + model->symmetry_functions->summary() + ",";
    }
    if (!model->module.find_method("energies_from_descriptor"))
      msg = "the module has no method energies_from_descriptor";
  } catch (const c10::Error &e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception &e) {
    msg = e.what();
  }
  if (!msg.empty()) {
    model->bispectrum.reset();
    model->symmetry_functions.reset();
    native_active = false;
    error->all(FLERR, "pair eip2nn: cannot compute the {} descriptor of {} natively: {} (`pair_style eip2nn "
                      "native no` runs its TorchScript descriptor)",
               native_descriptor, model_path, msg);
  }
  if (comm->me == 0) utils::logmesg(lmp, "eip2nn: {} computed natively in C++; the network in torch\n", what);
}

/* ----------------------------------------------------------------------
   layer-by-layer message passing or the deep ghost shell: layer by layer
   unless `layerwise no`, if the file exports its layers
------------------------------------------------------------------------- */

void PairEIP2NN::choose_message_passing_path()
{
  bool possible = mp_layers > 0 && nhops > 1;
  std::string missing;
  if (possible)
    for (const char *name : {"initial_features", "layer_inputs", "layer_update", "energies_from_features"})
      if (!model->module.find_method(name)) missing += (missing.empty() ? "" : ", ") + std::string(name);
  if (!missing.empty()) {
    possible = false;
    if (layerwise_user == 1)
      error->all(FLERR, "pair_style eip2nn layerwise yes: model {} lacks the method(s) {}; export it again with "
                        "this eip2nn", model_path, missing);
    if (comm->me == 0 && layerwise_user == -1 && !layerwise_active)
      utils::logmesg(lmp, "eip2nn: {} lacks the method(s) {} of layer-by-layer message passing (an older export): "
                          "running on the deep ghost shell; export it again with this eip2nn to run layer by "
                          "layer\n", model_path, missing);
  }
  if (layerwise_user == 1 && !possible)
    error->all(FLERR,
               "pair_style eip2nn layerwise yes: model {} does not export its message-passing layers "
               "(message_passing_layers {}, depth {}); export it again with this eip2nn, or leave layerwise out",
               model_path, mp_layers, nhops);
  const bool was = layerwise_active;
  layerwise_active = possible && layerwise_user != 0;
  if (comm->me == 0 && layerwise_active && !was)
    utils::logmesg(lmp, "eip2nn: message passing layer by layer ({} layers, {} features per atom exchanged with "
                        "the ghost atoms' owners in each)\n", mp_layers, feature_width);

  // the tabulated filter: layer by layer only, with a file that has a table and layer_output
  const bool table = filter_spacing > 0.0 && model->module.find_method("layer_output");
  if (filter_user == 1 && !table)
    error->all(FLERR, "pair_style eip2nn filter table: model {} has no filter table (a SchNet exported by this "
                      "eip2nn with a filter spacing > 0 has one); use filter network or export it again",
               model_path);
  if (filter_user == 1 && !layerwise_active)
    error->all(FLERR, "pair_style eip2nn filter table: the table is used layer by layer only, and this run uses "
                      "the deep ghost shell (layerwise no, or a file without its layers)");
  const bool filter_was = filter_active;
  filter_active = layerwise_active && table && filter_user != 0;
  if (comm->me == 0 && filter_active && !filter_was)
    utils::logmesg(lmp, "eip2nn: filters from the file's table ({} intervals of {} A, {} Hermite), convolved in one "
                        "pass over the edges\n", model->filter_intervals, filter_spacing,
                    model->filter_coefficients == 6 ? "quintic" : "cubic");

  // the dense layers in C++: with the table, from the file's native_dense
  if (mp_layers == 0) return;
  const bool dense = filter_active && native_dense == "schnet";
  if (native_user == 1 && !dense)
    error->all(FLERR, "pair_style eip2nn native yes: model {} has no dense layers this plugin runs natively "
                      "(native_dense '{}', filter table {}); they need the filter table (a SchNet exported by this "
                      "eip2nn with a filter spacing > 0), layer by layer; export it again, or leave native out",
               model_path, native_dense, filter_active ? "in use" : "not in use");
  const bool dense_was = native_dense_active;
  native_dense_active = dense && native_user != 0;
  if (comm->me == 0 && filter_active && !filter_was && native_dense.empty() && native_user == -1)
    utils::logmesg(lmp, "eip2nn: {} has no native_dense (an older export): its dense layers run in torch; export "
                        "it again with this eip2nn to run them in C++\n", model_path);
  if (!native_dense_active) return;
  std::string msg;
  if (!model->schnet) try {
    if (!model->module.hasattr("native_dense")) throw std::runtime_error("the module has no native_dense");
    std::vector<torch::Tensor> weights;
    for (const torch::Tensor &t : model->module.attr("native_dense").toTensorVector()) weights.push_back(t);
    if (!weights.empty() && weights[0].scalar_type() != model->filter_table.scalar_type())
      throw std::runtime_error(c10::str("native_dense is ", weights[0].scalar_type(), ", its filter table ",
                                        model->filter_table.scalar_type()));
    model->schnet = std::make_unique<eip2nn::NativeSchNet>(weights, mp_layers, feature_width);
  } catch (const c10::Error &e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception &e) {
    msg = e.what();
  }
  if (!msg.empty()) {
    native_dense_active = false;
    error->all(FLERR, "pair eip2nn: cannot run the dense layers of {} natively: {} (`pair_style eip2nn native no` "
                      "runs them in torch)", model_path, msg);
  }
  if (comm->me == 0 && !dense_was)
    utils::logmesg(lmp, "eip2nn: SchNet's dense layers in C++ ({}), no TorchScript in the step\n",
                   model->schnet->summary());
}

/* ---------------------------------------------------------------------- */

double PairEIP2NN::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* ----------------------------------------------------------------------
   graph of this rank: owned atoms first, then the ghosts reached from them
   by hops along edges < cutoff, up to nhops hops (breadth-first); a ghost
   that images an atom owned here is that atom's node (with an atom map). The full
   neighbourhood of every atom within nhops-1 hops is listed; atoms at hop
   nhops (the rim) only receive their edges to the inner atoms and the
   reverses, which is all a depth-nhops model needs for the owned energies.
------------------------------------------------------------------------- */

void PairEIP2NN::build_graph()
{
  double **x = atom->x;
  int *type = atom->type;
  const int nall = atom->nlocal + atom->nghost;

  hop.assign(nall, -1);
  node_of.assign(nall, -1);
  node_atom.clear();
  edge_src_atom.clear();
  edge_dst_atom.clear();

  const int inum = list->inum;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  // with an atom map, a ghost that is an image of an owned atom becomes that atom's node: on one
  // rank the graph is then the periodic one (no ghost shell of its own to evaluate)
  const int nlocal = atom->nlocal;
  const bool merge = atom->map_style != Atom::MAP_NONE;
  std::vector<int> frontier, next;
  frontier.reserve(inum);
  for (int ii = 0; ii < inum; ii++) {
    int i = ilist[ii];
    if (type2species[type[i]] < 0) continue;
    hop[i] = 0;
    node_of[i] = (int) node_atom.size();
    node_atom.push_back(i);
    frontier.push_back(i);
  }
  nlocal_nodes = (int) node_atom.size();

  for (int level = 0; level < nhops; level++) {
    next.clear();
    for (int a : frontier) {
      const double xa = x[a][0], ya = x[a][1], za = x[a][2];
      const int *jlist = firstneigh[a];
      const int jnum = numneigh[a];
      for (int jj = 0; jj < jnum; jj++) {
        const int b = jlist[jj] & NEIGHMASK;
        if (type2species[type[b]] < 0) continue;
        const double dx = x[b][0] - xa, dy = x[b][1] - ya, dz = x[b][2] - za;
        if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
        if (hop[b] < 0) {
          const int owner = merge ? atom->map(atom->tag[b]) : -1;
          if (owner >= 0 && owner < nlocal && node_of[owner] >= 0) {
            // a periodic image of an atom owned here: the same node (its features are the owner's)
            hop[b] = 0;
            node_of[b] = node_of[owner];
          } else {
            hop[b] = level + 1;
            node_of[b] = (int) node_atom.size();
            node_atom.push_back(b);
            if (level + 1 < nhops) next.push_back(b);
          }
        }
        edge_src_atom.push_back(a);
        edge_dst_atom.push_back(b);
        // b's own list is not walked (rim atom): add the reverse edge here
        if (hop[b] >= nhops) {
          edge_src_atom.push_back(b);
          edge_dst_atom.push_back(a);
        }
      }
    }
    frontier.swap(next);
  }
}

/* ----------------------------------------------------------------------
   one model call: per-node energies (n,) and the gradient of the first
   n_owned nodes' energy sum with respect to each edge vector (ne, 3), both
   float64; returns an error message ("" on success)
------------------------------------------------------------------------- */

static std::string evaluate(torch::jit::Module &module, bool float32, const torch::Tensor &species,
                            const torch::Tensor &src, const torch::Tensor &dst, const torch::Tensor &vec,
                            int64_t n_owned, torch::Tensor &energy, torch::Tensor &grad)
{
  const int64_t n = species.size(0), ne = vec.size(0);
  torch::Tensor vec_in = float32 ? vec.to(torch::kFloat32) : vec.clone();
  vec_in.requires_grad_(true);
  try {
    std::vector<torch::jit::IValue> inputs{species, src, dst, vec_in};
    torch::Tensor out = module.forward(inputs).toTensor();
    if (out.dim() != 1 || out.size(0) != n)
      return fmt::format("the model returned a tensor of shape {} for {} nodes, expected ({},)",
                         c10::str(out.sizes()), n, n);
    torch::Tensor e_owned = out.narrow(0, 0, n_owned).sum();
    if (ne > 0 && e_owned.requires_grad()) {
      auto grads = torch::autograd::grad({e_owned}, {vec_in}, /*grad_outputs=*/{},
                                         /*retain_graph=*/false, /*create_graph=*/false,
                                         /*allow_unused=*/true);
      grad = grads[0];
    }
    energy = out.detach().to(torch::kFloat64).contiguous();
    if (grad.defined()) grad = grad.to(torch::kFloat64).contiguous();
  } catch (const c10::Error &e) {
    return e.what_without_backtrace();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

/* ----------------------------------------------------------------------
   EIP2NN_PROFILE (a compile-time flag: EIP2NN_PROFILE=1 bash
   scripts/build_lammps_plugin.sh): CPU seconds of this thread in each part of
   evaluate_native and compute_layerwise (time on the CPU only, so that other
   processes' load counts less), summed over the run and written to stderr
   when the process ends
------------------------------------------------------------------------- */

#ifdef EIP2NN_PROFILE
#include <cstdio>
#include <ctime>

namespace {
enum NativePart {
  DENSITY, COMPONENTS, NETWORK, ADJOINT, EDGE_GRADIENTS, SF_VALUES, SF_EDGE_GRADIENTS,
  MP_GRAPH, MP_LAYERS, MP_EXCHANGE, MP_TABLE, MP_READOUT, MP_BACKWARD, MP_TALLY, NATIVE_PARTS
};

struct NativeProfile {
  double seconds[NATIVE_PARTS] = {};
  ~NativeProfile()
  {
    const char *names[NATIVE_PARTS] = {"density U_i (per-edge U)", "components B", "network (torch)",
                                       "adjoint Y", "edge gradients (U again, reverse mode)",
                                       "symmetry functions G", "symmetry-function edge gradients",
                                       "layer by layer: graph and tensors", "layer by layer: layers (torch)",
                                       "layer by layer: feature exchange (comm)",
                                       "layer by layer: tabulated filter (both passes)", "layer by layer: readout (torch)",
                                       "layer by layer: gradient (torch)", "layer by layer: forces and virial"};
    double total = 0.0;
    for (double t : seconds) total += t;
    if (total == 0.0) return;
    for (int k = 0; k < NATIVE_PARTS; k++)
      fprintf(stderr, "eip2nn profile: %-40s %8.3f s (CPU) %5.1f%%\n", names[k], seconds[k], 100 * seconds[k] / total);
  }
} native_profile;

double thread_seconds()
{
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double) t.tv_sec + 1e-9 * (double) t.tv_nsec;
}

// adds the CPU seconds of its scope to one part
struct PartTimer {
  NativePart part;
  double start = thread_seconds();
  ~PartTimer() { native_profile.seconds[part] += thread_seconds() - start; }
};

// a running part: switched to the next with EIP2NN_SWITCH, ended at the end of the scope; time spent in a nested
// EIP2NN_TIME part counts to both
struct RunningPart {
  NativePart part;
  double start = thread_seconds();
  void switch_to(NativePart next)
  {
    const double now = thread_seconds();
    native_profile.seconds[part] += now - start;
    part = next;
    start = now;
  }
  ~RunningPart() { native_profile.seconds[part] += thread_seconds() - start; }
};
}    // namespace

#define EIP2NN_TIME(part) PartTimer part_timer{part}
#define EIP2NN_START(part) RunningPart running_part{part}
#define EIP2NN_SWITCH(part) running_part.switch_to(part)
#else
#define EIP2NN_TIME(part)
#define EIP2NN_START(part)
#define EIP2NN_SWITCH(part)
#endif

/* ----------------------------------------------------------------------
   the edges of each owned atom (src = the atom; CSR by source), whose vectors
   a native descriptor reads atom by atom and whose gradients it writes back
------------------------------------------------------------------------- */

namespace {
class OwnedEdges {
 public:
  OwnedEdges(const torch::Tensor &src, const torch::Tensor &vec, int64_t n_owned) :
      first(n_owned + 1, 0), pv(vec.data_ptr<double>())
  {
    const int64_t *ps = src.data_ptr<int64_t>();
    const int64_t ne = src.size(0);
    for (int64_t e = 0; e < ne; e++)
      if (ps[e] < n_owned) first[ps[e] + 1]++;
    for (int64_t a = 0; a < n_owned; a++) first[a + 1] += first[a];
    edges.resize(first[n_owned]);
    std::vector<int64_t> fill(first.begin(), first.end() - 1);
    for (int64_t e = 0; e < ne; e++)
      if (ps[e] < n_owned) edges[fill[ps[e]]++] = e;
  }
  // the edge vectors (count, 3) of owned atom a, contiguous in vectors(); returns count
  int gather(int64_t a)
  {
    const int64_t count = first[a + 1] - first[a];
    atom_vec.resize(3 * count);
    for (int64_t t = 0; t < count; t++)
      for (int k = 0; k < 3; k++) atom_vec[3 * t + k] = pv[3 * edges[first[a] + t] + k];
    return (int) count;
  }
  const double *vectors() const { return atom_vec.data(); }
  // the gradients g (count, 3) of owned atom a's edges, in gather's order, into grad (ne, 3)
  void scatter(int64_t a, const double *g, double *grad) const
  {
    for (int64_t t = 0; t < first[a + 1] - first[a]; t++)
      for (int k = 0; k < 3; k++) grad[3 * edges[first[a] + t] + k] = g[3 * t + k];
  }

 private:
  std::vector<int64_t> first, edges;
  const double *pv;
  std::vector<double> atom_vec;
};
}    // namespace

/* ----------------------------------------------------------------------
   the network on a chunk's descriptor d (m, K) float64: the atoms' energies
   into energy (m,) and beta = dE/dd (m, K) float64 (undefined if the energies
   do not depend on d); a float32 module gets d cast to float32; returns an
   error message ("" on success)
------------------------------------------------------------------------- */

static std::string network(torch::jit::Method &energies_of, bool float32, const torch::Tensor &species,
                           const torch::Tensor &d, torch::Tensor energy, torch::Tensor &beta)
{
  EIP2NN_TIME(NETWORK);
  const int64_t m = d.size(0);
  torch::Tensor d_in = float32 ? d.to(torch::kFloat32) : d;
  d_in.requires_grad_(true);
  torch::Tensor out = energies_of({species, d_in}).toTensor();
  if (out.dim() != 1 || out.size(0) != m)
    return fmt::format("energies_from_descriptor returned a tensor of shape {} for {} atoms, expected ({},)",
                       c10::str(out.sizes()), m, m);
  beta = torch::Tensor();
  if (out.requires_grad())
    beta = torch::autograd::grad({out.sum()}, {d_in}, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                 /*create_graph=*/false, /*allow_unused=*/true)[0];
  energy.copy_(out.detach().to(torch::kFloat64));
  if (beta.defined()) beta = beta.to(torch::kFloat64).contiguous();
  return "";
}

/* ----------------------------------------------------------------------
   native bispectrum, owned atoms chunk_atoms at a time (0: all at once): B of
   each atom in C++ from its edges (src = the atom), energies and beta = dE/dB
   from the module's energies_from_descriptor by autograd, dE/dv of each edge
   in C++. Gives what evaluate() gives for the owned atoms: per-node energies
   (n,) (0 for ghosts) and the gradient (ne, 3) (0 for edges from ghosts),
   float64; returns an error message ("" on success)
------------------------------------------------------------------------- */

static std::string evaluate_native(torch::jit::Module &module, eip2nn::NativeBispectrum &bispectrum,
                                   bool float32, const torch::Tensor &species, const torch::Tensor &src,
                                   const torch::Tensor &vec, int64_t n_owned, int64_t chunk_atoms,
                                   torch::Tensor &energy, torch::Tensor &grad)
{
  const int64_t n = species.size(0), ne = vec.size(0);
  const int K = bispectrum.size(), D = bispectrum.density_size();
  auto opt_double = torch::TensorOptions().dtype(torch::kFloat64);
  energy = torch::zeros({n}, opt_double);
  grad = torch::zeros({ne, 3}, opt_double);
  OwnedEdges owned(src, vec, n_owned);
  double *pg = grad.data_ptr<double>();
  std::vector<double> atom_grad;

  // a chunk's atoms in batches of LANES (native_bispectrum.h): U_i and the group sums z of each batch
  // are kept from B to Y
  const int L = eip2nn::LANES, S = bispectrum.sums_size();
  const int64_t chunk = chunk_atoms > 0 ? std::min(chunk_atoms, n_owned) : n_owned;
  const int64_t batches = (chunk + L - 1) / L;
  std::vector<double> density(batches * D * L), sums(batches * S * L), y(D * L);
  try {
    torch::jit::Method energies_of = module.get_method("energies_from_descriptor");
    for (int64_t k0 = 0; k0 < n_owned; k0 += chunk) {
      const int64_t m = std::min(chunk, n_owned - k0);
      torch::Tensor b = torch::empty({m, K}, opt_double);
      double *pb = b.data_ptr<double>();
      for (int64_t a0 = 0; a0 < m; a0 += L) {
        const int count = (int) std::min<int64_t>(L, m - a0);
        double *u = &density[a0 * D];
        {
          EIP2NN_TIME(DENSITY);
          for (int l = 0; l < L; l++) {
            const int n_edges = l < count ? owned.gather(k0 + a0 + l) : 0;
            bispectrum.density(owned.vectors(), n_edges, u, l);
          }
        }
        EIP2NN_TIME(COMPONENTS);
        bispectrum.components(u, count, pb + a0 * K, &sums[a0 * S]);
      }

      torch::Tensor beta;
      std::string msg = network(energies_of, float32, species.narrow(0, k0, m), b, energy.narrow(0, k0, m), beta);
      if (!msg.empty()) return msg;
      if (!beta.defined()) continue;    // energies independent of B: no forces
      const double *pbeta = beta.data_ptr<double>();

      for (int64_t a0 = 0; a0 < m; a0 += L) {
        const int count = (int) std::min<int64_t>(L, m - a0);
        {
          EIP2NN_TIME(ADJOINT);
          bispectrum.adjoint(&density[a0 * D], &sums[a0 * S], pbeta + a0 * K, count, y.data());
        }
        EIP2NN_TIME(EDGE_GRADIENTS);
        for (int l = 0; l < count; l++) {
          const int64_t a = k0 + a0 + l;
          const int n_edges = owned.gather(a);
          atom_grad.resize(3 * n_edges);
          bispectrum.edge_gradients(owned.vectors(), n_edges, y.data(), l, atom_grad.data());
          owned.scatter(a, atom_grad.data(), pg);
        }
      }
    }
  } catch (const c10::Error &e) {
    return e.what_without_backtrace();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

/* ----------------------------------------------------------------------
   native symmetry functions, owned atoms chunk_atoms at a time (0: all at
   once): G of each atom in C++ from its edges, energies and beta = dE/dG from
   energies_from_descriptor, dE/dv of each edge in C++; the same outputs as
   evaluate_native
------------------------------------------------------------------------- */

static std::string evaluate_native_sf(torch::jit::Module &module, eip2nn::NativeSymmetryFunctions &functions,
                                      bool float32, const torch::Tensor &species, const torch::Tensor &src,
                                      const torch::Tensor &vec, int64_t n_owned, int64_t chunk_atoms,
                                      torch::Tensor &energy, torch::Tensor &grad)
{
  const int64_t n = species.size(0), ne = vec.size(0);
  const int K = functions.size();
  auto opt_double = torch::TensorOptions().dtype(torch::kFloat64);
  energy = torch::zeros({n}, opt_double);
  grad = torch::zeros({ne, 3}, opt_double);
  OwnedEdges owned(src, vec, n_owned);
  double *pg = grad.data_ptr<double>();
  std::vector<double> atom_grad;
  const int64_t chunk = chunk_atoms > 0 ? std::min(chunk_atoms, n_owned) : n_owned;
  try {
    torch::jit::Method energies_of = module.get_method("energies_from_descriptor");
    for (int64_t k0 = 0; k0 < n_owned; k0 += chunk) {
      const int64_t m = std::min(chunk, n_owned - k0);
      torch::Tensor g = torch::empty({m, K}, opt_double);
      double *pgv = g.data_ptr<double>();
      {
        EIP2NN_TIME(SF_VALUES);
        for (int64_t l = 0; l < m; l++) {
          const int n_edges = owned.gather(k0 + l);
          functions.values(owned.vectors(), n_edges, pgv + l * K);
        }
      }

      torch::Tensor beta;
      std::string msg = network(energies_of, float32, species.narrow(0, k0, m), g, energy.narrow(0, k0, m), beta);
      if (!msg.empty()) return msg;
      if (!beta.defined()) continue;    // energies independent of G: no forces
      const double *pbeta = beta.data_ptr<double>();

      EIP2NN_TIME(SF_EDGE_GRADIENTS);
      for (int64_t l = 0; l < m; l++) {
        const int n_edges = owned.gather(k0 + l);
        atom_grad.resize(3 * n_edges);
        functions.edge_gradients(owned.vectors(), n_edges, pbeta + l * K, atom_grad.data());
        owned.scatter(k0 + l, atom_grad.data(), pg);
      }
    }
  } catch (const c10::Error &e) {
    return e.what_without_backtrace();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

/* ---------------------------------------------------------------------- */

void PairEIP2NN::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  if (layerwise_active) {
    compute_layerwise();
    return;
  }
  build_graph();

  double **x = atom->x;
  int *type = atom->type;

  const int64_t n = (int64_t) node_atom.size();
  const int64_t ne = (int64_t) edge_src_atom.size();
  if (nlocal_nodes == 0) return;

  auto opt_long = torch::TensorOptions().dtype(torch::kInt64);
  auto opt_double = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor species = torch::empty({n}, opt_long);
  torch::Tensor src = torch::empty({ne}, opt_long);
  torch::Tensor dst = torch::empty({ne}, opt_long);
  torch::Tensor vec = torch::empty({ne, 3}, opt_double);
  {
    int64_t *sp = species.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; k++) sp[k] = type2species[type[node_atom[k]]];
    int64_t *ps = src.data_ptr<int64_t>();
    int64_t *pd = dst.data_ptr<int64_t>();
    double *pv = vec.data_ptr<double>();
    for (int64_t e = 0; e < ne; e++) {
      const int a = edge_src_atom[e], b = edge_dst_atom[e];
      ps[e] = node_of[a];
      pd[e] = node_of[b];
      pv[3 * e + 0] = x[b][0] - x[a][0];
      pv[3 * e + 1] = x[b][1] - x[a][1];
      pv[3 * e + 2] = x[b][2] - x[a][2];
    }
  }

  torch::Tensor node_energy, grad;
  std::string msg;
  const int chunk_atoms = chunk_user >= 0 ? chunk_user : chunk_model;
  if (native_active && model->bispectrum) {
    msg = evaluate_native(model->module, *model->bispectrum, model_float32, species, src, vec, nlocal_nodes,
                          chunk_user >= 0 ? chunk_user : NATIVE_CHUNK_ATOMS, node_energy, grad);
  } else if (native_active) {
    msg = evaluate_native_sf(model->module, *model->symmetry_functions, model_float32, species, src, vec,
                             nlocal_nodes, chunk_user >= 0 ? chunk_user : NATIVE_CHUNK_ATOMS, node_energy, grad);
  } else if (per_atom_descriptor && chunk_atoms > 0 && nlocal_nodes > chunk_atoms && nhops == 1) {
    // owned atoms in chunks, each with its own edges only (an owned atom's energy needs no other's);
    // the rim's reverse edges only feed ghost energies, which are not counted: their gradient is 0
    node_energy = torch::zeros({n}, opt_double);
    grad = torch::zeros({ne, 3}, opt_double);
    const int64_t *ps = src.data_ptr<int64_t>();
    std::vector<std::vector<int64_t>> edges_of((nlocal_nodes + chunk_atoms - 1) / chunk_atoms);
    for (int64_t e = 0; e < ne; e++)
      if (ps[e] < nlocal_nodes) edges_of[ps[e] / chunk_atoms].push_back(e);
    for (size_t c = 0; c < edges_of.size() && msg.empty(); c++) {
      const int64_t k0 = (int64_t) c * chunk_atoms, m = std::min<int64_t>(chunk_atoms, nlocal_nodes - k0);
      auto idx = torch::from_blob(edges_of[c].data(), {(int64_t) edges_of[c].size()}, opt_long).clone();
      torch::Tensor energy_c, grad_c;
      msg = evaluate(model->module, model_float32, species.narrow(0, k0, m), src.index_select(0, idx) - k0,
                     torch::zeros_like(idx), vec.index_select(0, idx), m, energy_c, grad_c);
      if (!msg.empty()) break;
      node_energy.narrow(0, k0, m).copy_(energy_c);
      if (grad_c.defined()) grad.index_copy_(0, idx, grad_c);
    }
  } else {
    msg = evaluate(model->module, model_float32, species, src, dst, vec, nlocal_nodes, node_energy, grad);
  }
  if (!msg.empty()) error->one(FLERR, "pair eip2nn: model evaluation failed: {}", msg);

  // energies of the owned atoms
  const double *pe = node_energy.data_ptr<double>();
  if (eflag_either) {
    double esum = 0.0;
    for (int k = 0; k < nlocal_nodes; k++) {
      esum += pe[k];
      if (eflag_atom) eatom[node_atom[k]] += pe[k];
    }
    if (eflag_global) eng_vdwl += esum;
  }

  if (!grad.defined()) return;    // no edges: no forces
  tally_edges(grad.data_ptr<double>(), vec.data_ptr<double>());
}

/* ----------------------------------------------------------------------
   forces (owned and ghost atoms) and virial from the gradient g = dE/dv (ne, 3)
   of every edge (edge_src_atom -> edge_dst_atom, vector v (ne, 3))
------------------------------------------------------------------------- */

void PairEIP2NN::tally_edges(const double *pg, const double *pv)
{
  double **f = atom->f;
  const int64_t ne = (int64_t) edge_src_atom.size();
  for (int64_t e = 0; e < ne; e++) {
    const int a = edge_src_atom[e], b = edge_dst_atom[e];
    const double gx = pg[3 * e], gy = pg[3 * e + 1], gz = pg[3 * e + 2];
    f[a][0] += gx;
    f[a][1] += gy;
    f[a][2] += gz;
    f[b][0] -= gx;
    f[b][1] -= gy;
    f[b][2] -= gz;
    if (vflag_either) {
      const double vx = pv[3 * e], vy = pv[3 * e + 1], vz = pv[3 * e + 2];
      // sum_atoms x (x) f of this edge's two forces = -v (x) g
      const double w[6] = {-vx * gx, -vy * gy, -vz * gz, -vx * gy, -vx * gz, -vy * gz};
      if (vflag_global)
        for (int k = 0; k < 6; k++) virial[k] += w[k];
      if (vflag_atom)
        for (int k = 0; k < 6; k++) {
          vatom[a][k] += 0.5 * w[k];
          vatom[b][k] += 0.5 * w[k];
        }
      if (cvflag_atom) {
        // the whole -v (x) g to the edge's source, whose energy the edge belongs to (xx yy zz xy xz yz yx zx zy)
        const double c[9] = {w[0], w[1], w[2], w[3], w[4], w[5], -vy * gx, -vz * gx, -vz * gy};
        for (int k = 0; k < 9; k++) cvatom[a][k] += c[k];
      }
    }
  }
}

/* ----------------------------------------------------------------------
   the one-cutoff graph of layer-by-layer message passing: the rows are the
   owned atoms that have an energy (node_atom); the edges are each one's own,
   to every neighbour (owned or ghost, by LAMMPS atom index) closer than the
   cutoff; owned atoms of a NULL type (pair_style hybrid) and their neighbours
   of one are left out. With the filter table, when every owned atom is a row
   (nodes_are_atoms), an edge to an owned atom or an image of one on this rank
   (feature_row below nlocal) is paired with the reverse edge, which the owned atom has in
   its own list: the pair is kept once (from the lower row; between an atom
   and its own image, the edge whose vector is positive first in x, y, z), and
   the filter's passes evaluate it once for both directions. The pairs come
   first (npair_edges), then the edges to other ranks' ghosts
------------------------------------------------------------------------- */

void PairEIP2NN::build_local_graph()
{
  double **x = atom->x;
  int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int inum = list->inum;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double inv_h = filter_active ? 1.0 / filter_spacing : 0.0;
  const int last_interval = filter_active ? (int) model->filter_intervals - 1 : 0;

  nodes_are_atoms = inum == nlocal;
  for (int ii = 0; ii < inum && nodes_are_atoms; ii++)
    nodes_are_atoms = ilist[ii] == ii && type2species[type[ii]] >= 0;
  const bool pairing = filter_active && nodes_are_atoms;

  node_atom.clear();
  for (auto *edges : {&edge_src_atom, &edge_dst_atom, &edge_src_row, &edge_interval, &single_src_atom,
                      &single_dst_atom, &single_src_row, &single_interval})
    edges->clear();
  for (int ii = 0; ii < inum; ii++) {
    const int a = ilist[ii];
    if (type2species[type[a]] < 0) continue;
    const int row = (int) node_atom.size();
    node_atom.push_back(a);
    const double xa = x[a][0], ya = x[a][1], za = x[a][2];
    const int *jlist = firstneigh[a];
    for (int jj = 0; jj < numneigh[a]; jj++) {
      const int b = jlist[jj] & NEIGHMASK;
      const int c = feature_row[b] < nlocal ? feature_row[b] : -1;    // b's owned atom here, -1 for another rank's
      const bool paired = pairing && c >= 0;
      if (paired && c < a) continue;    // the reverse edge, from c, stands for the pair
      if (type2species[type[b]] < 0) continue;
      const double dx = x[b][0] - xa, dy = x[b][1] - ya, dz = x[b][2] - za;
      const double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= cutoff_sq) continue;
      if (paired && c == a && !(dx > 0.0 || (dx == 0.0 && (dy > 0.0 || (dy == 0.0 && dz > 0.0))))) continue;
      (paired ? edge_src_atom : single_src_atom).push_back(a);
      (paired ? edge_dst_atom : single_dst_atom).push_back(b);
      (paired ? edge_src_row : single_src_row).push_back(row);
      if (filter_active)
        (paired ? edge_interval : single_interval)
            .push_back(std::min(last_interval, (int) (std::sqrt(rsq) * inv_h)));
    }
  }
  nlocal_nodes = (int) node_atom.size();
  npair_edges = (int64_t) edge_src_atom.size();
  edge_src_atom.insert(edge_src_atom.end(), single_src_atom.begin(), single_src_atom.end());
  edge_dst_atom.insert(edge_dst_atom.end(), single_dst_atom.begin(), single_dst_atom.end());
  edge_src_row.insert(edge_src_row.end(), single_src_row.begin(), single_src_row.end());
  edge_interval.insert(edge_interval.end(), single_interval.begin(), single_interval.end());
  if (filter_active) {
    order_edges_by_interval(0, npair_edges);
    order_edges_by_interval(npair_edges, (int64_t) edge_src_atom.size());
  }
}

/* ----------------------------------------------------------------------
   the filter table's passes (tabulated_filter.h) load each interval's P x F
   coefficients once per run of edges in that interval. In the neighbour
   list's order consecutive edges are in different intervals; so within each
   block of EDGE_BLOCK consecutive edges of [begin, end) (the edges of some
   70 atoms near one another, as LAMMPS sorts atoms in space) the edges are
   put in order of their interval by a counting sort. The block's features
   stay in L1/L2
------------------------------------------------------------------------- */

void PairEIP2NN::order_edges_by_interval(int64_t begin, int64_t end)
{
  constexpr int64_t EDGE_BLOCK = 2048;
  const int64_t G = model->filter_intervals;
  interval_count.resize(G + 1);    // zeroed per block below
  sorted_src_atom.resize(end);
  sorted_dst_atom.resize(end);
  sorted_src_row.resize(end);
  for (int64_t e0 = begin; e0 < end; e0 += EDGE_BLOCK) {
    const int64_t e1 = std::min(end, e0 + EDGE_BLOCK);
    std::fill(interval_count.begin(), interval_count.end(), 0);
    for (int64_t e = e0; e < e1; e++) interval_count[edge_interval[e] + 1]++;
    for (int64_t k = 0; k < G; k++) interval_count[k + 1] += interval_count[k];
    for (int64_t e = e0; e < e1; e++) {
      const int64_t to = e0 + interval_count[edge_interval[e]]++;
      sorted_src_atom[to] = edge_src_atom[e];
      sorted_dst_atom[to] = edge_dst_atom[e];
      sorted_src_row[to] = edge_src_row[e];
    }
  }
  std::copy(sorted_src_atom.begin() + begin, sorted_src_atom.begin() + end, edge_src_atom.begin() + begin);
  std::copy(sorted_dst_atom.begin() + begin, sorted_dst_atom.begin() + end, edge_dst_atom.begin() + begin);
  std::copy(sorted_src_row.begin() + begin, sorted_src_row.begin() + end, edge_src_row.begin() + begin);
}

/* ----------------------------------------------------------------------
   message passing layer by layer (see the top of this file): features of the
   owned atoms only; per layer, their inputs to the neighbours, those of
   other ranks' atoms from their owners (exchange_rows_forward), the update
   from the edges; then the gradient back through the layers, the input
   gradients of other ranks' atoms summed into their owners
   (exchange_rows_reverse). Every rank takes every step, with or without
   atoms or edges of its own: the exchanges pair ranks up
------------------------------------------------------------------------- */

void PairEIP2NN::compute_layerwise()
{
  EIP2NN_START(MP_GRAPH);
  // each neighbour's features are read from the owned atom it is an image of where it is one: on one rank every
  // ghost is, and there is no exchange
  if (image_owner_build != neighbor->ncalls) refresh_image_owners();
  build_local_graph();
  const bool one_rank = comm->nprocs == 1;
  double **x = atom->x;
  int *type = atom->type;
  const int64_t m = nlocal_nodes;
  // the rows a layer's convolution reads its neighbours' features from: one per owned atom, then one per atom of
  // another rank that is a neighbour here (feature_row; none on one rank)
  const int64_t nrows = atom->nlocal + (int64_t) foreign_row_atom.size();
  const int64_t ne = (int64_t) edge_src_atom.size();
  const int F = feature_width;

  auto opt_long = torch::TensorOptions().dtype(torch::kInt64);
  auto opt_double = torch::TensorOptions().dtype(torch::kFloat64);
  const auto dtype = model_float32 ? torch::kFloat32 : torch::kFloat64;
  torch::Tensor species = torch::empty({m}, opt_long);
  torch::Tensor owned = torch::empty({m}, opt_long);
  torch::Tensor src = torch::empty({ne}, opt_long);
  torch::Tensor dst = torch::empty({ne}, opt_long);
  torch::Tensor vec = torch::empty({ne, 3}, opt_double);
  torch::Tensor length = torch::empty({ne}, opt_double);    // |vec|, A
  {
    int64_t *sp = species.data_ptr<int64_t>();
    int64_t *po = owned.data_ptr<int64_t>();
    for (int64_t k = 0; k < m; k++) {
      po[k] = node_atom[k];
      sp[k] = type2species[type[node_atom[k]]];
    }
    int64_t *ps = src.data_ptr<int64_t>();
    int64_t *pd = dst.data_ptr<int64_t>();
    double *pv = vec.data_ptr<double>();
    double *pl = length.data_ptr<double>();
    for (int64_t e = 0; e < ne; e++) {
      const int a = edge_src_atom[e], b = edge_dst_atom[e];
      ps[e] = edge_src_row[e];
      pd[e] = feature_row[b];
      for (int k = 0; k < 3; k++) pv[3 * e + k] = x[b][k] - x[a][k];
      pl[e] = std::sqrt(pv[3 * e] * pv[3 * e] + pv[3 * e + 1] * pv[3 * e + 1] + pv[3 * e + 2] * pv[3 * e + 2]);
    }
  }

  // forward: the nodes' rows (m, F) in, the nrows rows out: the owned atoms' (0 for an atom with no node) and,
  // on several ranks, other ranks' atoms' (from their owners). reverse: gradients of the nrows rows in (contiguous,
  // in the model's dtype, this function's to write into), each node's row plus the other ranks' rows of its atom out
  auto exchange_forward = [&](const torch::Tensor &node_rows) -> torch::Tensor {
    EIP2NN_TIME(MP_EXCHANGE);
    torch::Tensor y = node_rows.detach().to(dtype).contiguous();
    if (one_rank && nodes_are_atoms) return y;
    torch::Tensor rows;
    if (nodes_are_atoms) {
      rows = torch::empty({nrows, F}, y.options());
      rows.narrow(0, 0, m).copy_(y);
    } else {
      rows = torch::zeros({nrows, F}, y.options());
      rows.index_copy_(0, owned, y);
    }
    if (!one_rank) exchange_rows_forward(rows.data_ptr());
    return rows;
  };
  auto exchange_reverse = [&](const torch::Tensor &all_rows) -> torch::Tensor {
    EIP2NN_TIME(MP_EXCHANGE);
    if (!one_rank) exchange_rows_reverse(all_rows.data_ptr());
    return nodes_are_atoms ? all_rows.narrow(0, 0, m) : all_rows.index_select(0, owned);
  };

  std::string msg;
  torch::Tensor grad_vec, e_owned;
  if (native_dense_active) {
    // the whole step in C++: the dense layers by hand (native_schnet.h), the filter from the table
    try {
      c10::InferenceMode no_autograd;
      eip2nn::NativeSchNet &net = *model->schnet;
      // the rows' species (0 for a type the model does not cover: such an atom has no edges)
      torch::Tensor species_all = torch::empty({nrows}, opt_long);
      int64_t *sa = species_all.data_ptr<int64_t>();
      for (int64_t k = 0; k < nrows; k++)
        sa[k] = std::max(0, type2species[type[k < atom->nlocal ? k : foreign_row_atom[k - atom->nlocal]]]);
      torch::Tensor r = length.to(dtype).contiguous();
      torch::Tensor grad_r = torch::zeros({ne}, r.options());
      EIP2NN_SWITCH(MP_LAYERS);
      torch::Tensor h = net.initial_features(species);
      std::vector<torch::Tensor> inputs_all(mp_layers);    // per layer: the rows' inputs (nrows, F)
      for (int k = 0; k < mp_layers; k++) {
        // the first layer's inputs depend on the species alone: every rank has its ghosts' (no exchange)
        torch::Tensor y_all = k == 0 ? net.first_inputs(species_all)
                                     : exchange_forward(net.layer_inputs(k, h)).contiguous();
        torch::Tensor agg;
        {
          EIP2NN_TIME(MP_TABLE);
          agg = eip2nn::tabulated_convolution(y_all, r, src, dst, model->filter_table[k], filter_spacing, m,
                                              npair_edges);
        }
        h = net.layer_output(k, h, agg);
        inputs_all[k] = y_all;
      }
      EIP2NN_SWITCH(MP_READOUT);
      e_owned = net.energies(species, h);
      EIP2NN_SWITCH(MP_BACKWARD);
      torch::Tensor g = net.energies_backward();    // dE/dh of the owned atoms after each layer, back to front
      for (int k = mp_layers - 1; k >= 0; k--) {
        torch::Tensor g_agg = net.layer_output_backward(k, g);
        torch::Tensor g_inputs = k > 0 ? torch::zeros_like(inputs_all[k]) : torch::Tensor();
        {
          EIP2NN_TIME(MP_TABLE);
          eip2nn::tabulated_convolution_backward(g_agg, inputs_all[k], r, src, dst, model->filter_table[k],
                                                 filter_spacing, g_inputs, grad_r, npair_edges);
        }
        if (k == 0) break;    // the embedding has no gradient to pass on: no reverse exchange on any rank
        // the ghosts' input gradients to their owners; the residual passes g on as it is
        g = net.layer_inputs_backward(k, exchange_reverse(g_inputs), g);
      }
      grad_vec = ((grad_r.to(torch::kFloat64) / length).unsqueeze(1) * vec).contiguous();
      e_owned = e_owned.to(torch::kFloat64).contiguous();
    } catch (const c10::Error &e) {
      msg = e.what_without_backtrace();
    } catch (const std::exception &e) {
      msg = e.what();
    }
  } else try {
    torch::jit::Method initial = model->module.get_method("initial_features");
    torch::jit::Method inputs_of = model->module.get_method("layer_inputs");
    torch::jit::Method update = model->module.get_method("layer_update");
    // a Method has no empty state: without the table this handle is layer_update's and goes unused
    torch::jit::Method layer_output = model->module.get_method(filter_active ? "layer_output" : "layer_update");
    torch::jit::Method readout = model->module.get_method("energies_from_features");
    // the tabulated filter: edge lengths r (no autograd: its gradient is summed by the kernel into grad_r)
    const bool tabulated = filter_active;
    torch::Tensor r, grad_r;
    if (tabulated) {
      r = length.to(dtype).contiguous();
      grad_r = torch::zeros({ne}, r.options());
    }
    // without the table: the edge vectors autograd differentiates through layer_update
    torch::Tensor v = tabulated ? torch::Tensor() : vec.to(dtype).requires_grad_(true);
    auto check_shape = [&](const char *what, int k, const torch::Tensor &t, int64_t rows_expected) {
      if (t.dim() != 2 || t.size(0) != rows_expected || t.size(1) != F)
        throw std::runtime_error(fmt::format("{} (layer {}) returned shape {}, expected ({}, {})", what, k,
                                             c10::str(t.sizes()), rows_expected, F));
    };

    EIP2NN_SWITCH(MP_LAYERS);
    torch::Tensor h = initial({species}).toTensor();
    check_shape("initial_features", 0, h, m);
    // per layer: its features (leaf), the owned atoms' inputs, every atom's inputs (leaf), the new features
    // and, with the table, the aggregated messages (leaf)
    std::vector<torch::Tensor> features, inputs_owned, inputs_all, outputs, aggregated;
    for (int k = 0; k < mp_layers; k++) {
      torch::Tensor in = h.detach().requires_grad_(k > 0);    // the embedding has no gradient to pass on
      torch::Tensor y = inputs_of({(int64_t) k, in}).toTensor();
      check_shape("layer_inputs", k, y, m);
      torch::Tensor out;
      if (tabulated) {
        torch::Tensor y_all = exchange_forward(y).contiguous();
        torch::Tensor agg;
        {
          EIP2NN_TIME(MP_TABLE);
          agg = eip2nn::tabulated_convolution(y_all, r, src, dst, model->filter_table[k], filter_spacing, m,
                                              npair_edges);
        }
        agg.requires_grad_(true);
        out = layer_output({(int64_t) k, in, agg}).toTensor();
        check_shape("layer_output", k, out, m);
        inputs_all.push_back(y_all);
        aggregated.push_back(agg);
      } else {
        torch::Tensor y_all = exchange_forward(y).requires_grad_(k > 0);    // layer 0's: from the embedding
        out = update({(int64_t) k, in, y_all, src, dst, v}).toTensor();
        check_shape("layer_update", k, out, m);
        inputs_all.push_back(y_all);
      }
      features.push_back(in);
      inputs_owned.push_back(y);
      outputs.push_back(out);
      h = out;
    }
    EIP2NN_SWITCH(MP_READOUT);
    torch::Tensor last = h.detach().requires_grad_(true);
    e_owned = readout({species, last}).toTensor();
    if (e_owned.dim() != 1 || e_owned.size(0) != m)
      throw std::runtime_error(fmt::format("energies_from_features returned shape {} for {} atoms",
                                           c10::str(e_owned.sizes()), m));

    // g: dE/d(features) of the owned atoms after each layer
    EIP2NN_SWITCH(MP_BACKWARD);
    torch::Tensor g;
    if (e_owned.requires_grad())
      g = torch::autograd::grad({e_owned.sum()}, {last}, {}, false, false, /*allow_unused=*/true)[0];
    if (!g.defined()) g = torch::zeros_like(last);
    if (!tabulated) grad_vec = torch::zeros({ne, 3}, v.options());
    for (int k = mp_layers - 1; k >= 0; k--) {
      torch::Tensor g_vec, g_inputs, g_direct;
      if (tabulated && outputs[k].requires_grad()) {
        std::vector<torch::Tensor> wrt{aggregated[k]};
        if (k > 0) wrt.push_back(features[k]);
        auto grads = torch::autograd::grad({outputs[k]}, wrt, {g}, /*retain_graph=*/false, /*create_graph=*/false,
                                           /*allow_unused=*/true);
        if (k > 0) {
          g_direct = grads[1];
          g_inputs = torch::zeros_like(inputs_all[k]);
        }
        if (grads[0].defined()) {
          EIP2NN_TIME(MP_TABLE);
          eip2nn::tabulated_convolution_backward(grads[0], inputs_all[k], r, src, dst, model->filter_table[k],
                                                 filter_spacing, g_inputs, grad_r, npair_edges);
        }
      } else if (outputs[k].requires_grad()) {
        std::vector<torch::Tensor> wrt{v};
        if (k > 0) wrt.insert(wrt.end(), {inputs_all[k], features[k]});
        auto grads = torch::autograd::grad({outputs[k]}, wrt, {g}, /*retain_graph=*/false, /*create_graph=*/false,
                                           /*allow_unused=*/true);
        g_vec = grads[0];
        if (k > 0) {
          g_inputs = grads[1];
          g_direct = grads[2];
        }
      }
      if (g_vec.defined()) grad_vec += g_vec;
      if (k == 0) break;    // the embedding has no gradient to pass on: no reverse exchange on any rank
      // the ghosts' input gradients to their owners, then back through layer_inputs
      // (autograd's gradient copied: the exchange writes into it)
      torch::Tensor g_y = exchange_reverse(!g_inputs.defined() ? torch::zeros_like(inputs_all[k])
                                           : tabulated ? g_inputs : g_inputs.contiguous().clone());
      torch::Tensor g_through;
      if (inputs_owned[k].requires_grad())
        g_through = torch::autograd::grad({inputs_owned[k]}, {features[k]}, {g_y}, false, false, true)[0];
      g = g_direct.defined() ? g_direct : torch::zeros_like(features[k]);
      if (g_through.defined()) g = g + g_through;
    }
    if (tabulated)    // dE/dv = dE/dr v / r
      grad_vec = (grad_r.to(torch::kFloat64) / length).unsqueeze(1) * vec;
    grad_vec = grad_vec.to(torch::kFloat64).contiguous();
    e_owned = e_owned.detach().to(torch::kFloat64).contiguous();
  } catch (const c10::Error &e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception &e) {
    msg = e.what();
  }
  EIP2NN_SWITCH(MP_TALLY);
  if (!msg.empty()) error->one(FLERR, "pair eip2nn: model evaluation failed (layer by layer): {}", msg);

  if (eflag_either) {
    const double *pe = e_owned.data_ptr<double>();
    double esum = 0.0;
    for (int64_t k = 0; k < m; k++) {
      esum += pe[k];
      if (eflag_atom) eatom[node_atom[k]] += pe[k];
    }
    if (eflag_global) eng_vdwl += esum;
  }
  if (ne > 0) tally_edges(grad_vec.data_ptr<double>(), vec.data_ptr<double>());
}

/* ----------------------------------------------------------------------
   feature_row, per LAMMPS atom: first the owned atom it is (an image of), or
   -1 for a ghost of another rank's atom. A forward comm sends each atom's
   rank and index along (a ghost sent on in a later swap passes on its
   owner's); then, on several ranks, the feature exchange is planned and
   gives the other ranks' atoms their rows
------------------------------------------------------------------------- */

void PairEIP2NN::refresh_image_owners()
{
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  image_code.assign(nall, -1);
  for (int a = 0; a < nlocal; a++) image_code[a] = ((int64_t) comm->me << 32) | a;
  comm->forward_comm(this);
  feature_row.resize(nall);
  for (int a = 0; a < nall; a++)
    feature_row[a] = (image_code[a] >> 32) == comm->me ? (int) (image_code[a] & 0xffffffff) : -1;
  foreign_row_atom.clear();
  if (comm->nprocs > 1) plan_feature_exchange();
  image_owner_build = neighbor->ncalls;
}

/* ----------------------------------------------------------------------
   the rows of other ranks' atoms: one per such atom that a node has as a
   neighbour (all its images here share it; the ghosts of a small cell are
   several images of each), in order of owner rank, then index. Ranks tell
   each other how many of whose atoms they need (MPI_Alltoall), then which
   ones (point to point): recv_* and send_* (see the header). Collective:
   every rank calls it after the same neighbour-list build
------------------------------------------------------------------------- */

void PairEIP2NN::plan_feature_exchange()
{
  constexpr int TAG_PLAN = 1;
  const int nlocal = atom->nlocal, nprocs = comm->nprocs;
  int *type = atom->type;
  // the other ranks' atoms a node has as a neighbour, with one ghost imaging each
  std::vector<std::pair<int64_t, int>> wanted;    // (image code, ghost)
  for (int ii = 0; ii < list->inum; ii++) {
    const int a = list->ilist[ii];
    if (type2species[type[a]] < 0) continue;
    const int *jlist = list->firstneigh[a];
    for (int jj = 0; jj < list->numneigh[a]; jj++) {
      const int b = jlist[jj] & NEIGHMASK;
      if (feature_row[b] < 0 && type2species[type[b]] >= 0) wanted.emplace_back(image_code[b], b);
    }
  }
  std::sort(wanted.begin(), wanted.end());
  std::vector<int> want(nprocs, 0), give(nprocs, 0), request;
  for (size_t w = 0; w < wanted.size(); w++) {
    const int64_t code = wanted[w].first;
    if (w == 0 || code != wanted[w - 1].first) {
      want[code >> 32]++;
      request.push_back((int) (code & 0xffffffff));
      foreign_row_atom.push_back(wanted[w].second);
    }
    feature_row[wanted[w].second] = nlocal + (int) foreign_row_atom.size() - 1;
  }
  MPI_Alltoall(want.data(), 1, MPI_INT, give.data(), 1, MPI_INT, exchange_comm);

  for (auto *v : {&recv_rank, &recv_first, &recv_count, &send_rank, &send_first, &send_count}) v->clear();
  int nrecv = 0, nsend = 0;
  for (int p = 0; p < nprocs; p++) {
    if (want[p] > 0) {
      recv_rank.push_back(p);
      recv_first.push_back(nrecv);
      recv_count.push_back(want[p]);
      nrecv += want[p];
    }
    if (give[p] > 0) {
      send_rank.push_back(p);
      send_first.push_back(nsend);
      send_count.push_back(give[p]);
      nsend += give[p];
    }
  }
  send_atom.resize(nsend);
  std::vector<MPI_Request> requests;
  for (size_t p = 0; p < send_rank.size(); p++) {
    requests.emplace_back();
    MPI_Irecv(send_atom.data() + send_first[p], send_count[p], MPI_INT, send_rank[p], TAG_PLAN, exchange_comm,
              &requests.back());
  }
  for (size_t p = 0; p < recv_rank.size(); p++) {
    requests.emplace_back();
    MPI_Isend(request.data() + recv_first[p], recv_count[p], MPI_INT, recv_rank[p], TAG_PLAN, exchange_comm,
              &requests.back());
  }
  MPI_Waitall((int) requests.size(), requests.data(), MPI_STATUSES_IGNORE);
  for (int a : send_atom)
    if (a < 0 || a >= nlocal)
      error->one(FLERR, "pair eip2nn: another rank asked for the features of atom {}, this rank owns {}", a,
                 nlocal);
}

/* ----------------------------------------------------------------------
   the feature exchange of layer-by-layer message passing, on the rows of
   compute_layerwise (nlocal + foreign_row_atom.size() rows of
   exchange_row_bytes, contiguous). Forward: each rank's rows of the atoms
   others asked for, gathered, into the others' rows of those atoms (received
   in place). Reverse: the rows of other ranks' atoms back to their owners,
   each added into its atom's row (in the order of send_rank, then send_atom)
------------------------------------------------------------------------- */

void PairEIP2NN::exchange_rows_forward(void *rows)
{
  constexpr int TAG_FORWARD = 2;
  char *row = static_cast<char *>(rows);
  const size_t bytes = exchange_row_bytes;
  exchange_buffer.resize(send_atom.size() * bytes);
  std::vector<MPI_Request> &requests = exchange_requests;
  requests.resize(recv_rank.size() + send_rank.size());
  for (size_t p = 0; p < recv_rank.size(); p++)
    MPI_Irecv(row + (atom->nlocal + (size_t) recv_first[p]) * bytes, recv_count[p], exchange_row_type,
              recv_rank[p], TAG_FORWARD, exchange_comm, &requests[p]);
  for (size_t p = 0; p < send_rank.size(); p++) {
    char *out = exchange_buffer.data() + (size_t) send_first[p] * bytes;
    for (int i = 0; i < send_count[p]; i++)
      std::memcpy(out + (size_t) i * bytes, row + (size_t) send_atom[send_first[p] + i] * bytes, bytes);
    MPI_Isend(out, send_count[p], exchange_row_type, send_rank[p], TAG_FORWARD, exchange_comm,
              &requests[recv_rank.size() + p]);
  }
  MPI_Waitall((int) requests.size(), requests.data(), MPI_STATUSES_IGNORE);
}

namespace {
// n rows of in (F values of T each) added into the rows atoms[i] of out
template <typename T> void add_rows(int n, const int *atoms, const char *in, int F, void *out)
{
  const T *from = reinterpret_cast<const T *>(in);
  T *to = static_cast<T *>(out);
  for (int i = 0; i < n; i++) {
    T *row = to + (size_t) atoms[i] * F;
    for (int k = 0; k < F; k++) row[k] += from[(size_t) i * F + k];
  }
}
}    // namespace

void PairEIP2NN::exchange_rows_reverse(void *rows)
{
  constexpr int TAG_REVERSE = 3;
  char *row = static_cast<char *>(rows);
  const size_t bytes = exchange_row_bytes;
  exchange_buffer.resize(send_atom.size() * bytes);
  std::vector<MPI_Request> &requests = exchange_requests;
  requests.resize(recv_rank.size() + send_rank.size());
  for (size_t p = 0; p < send_rank.size(); p++)
    MPI_Irecv(exchange_buffer.data() + (size_t) send_first[p] * bytes, send_count[p], exchange_row_type,
              send_rank[p], TAG_REVERSE, exchange_comm, &requests[p]);
  for (size_t p = 0; p < recv_rank.size(); p++)
    MPI_Isend(row + (atom->nlocal + (size_t) recv_first[p]) * bytes, recv_count[p], exchange_row_type,
              recv_rank[p], TAG_REVERSE, exchange_comm, &requests[send_rank.size() + p]);
  MPI_Waitall((int) requests.size(), requests.data(), MPI_STATUSES_IGNORE);
  const int n = (int) send_atom.size();
  if (model_float32)
    add_rows<float>(n, send_atom.data(), exchange_buffer.data(), feature_width, rows);
  else
    add_rows<double>(n, send_atom.data(), exchange_buffer.data(), feature_width, rows);
}

/* ----------------------------------------------------------------------
   LAMMPS's forward comm, which this style uses for one thing: each ghost's
   image_code from its owner (refresh_image_owners)
------------------------------------------------------------------------- */

int PairEIP2NN::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  for (int i = 0; i < n; i++) buf[i] = ubuf(image_code[list[i]]).d;
  return n;
}

void PairEIP2NN::unpack_forward_comm(int n, int first, double *buf)
{
  for (int i = 0; i < n; i++) image_code[first + i] = ubuf(buf[i]).i;
}
