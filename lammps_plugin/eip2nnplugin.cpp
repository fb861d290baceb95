/* ----------------------------------------------------------------------
   The LAMMPS plugin of pair_style eip2nn:
     plugin load /path/to/eip2nnplugin.so
   A loader only: it opens eip2nnpair.so (the pair style, over libtorch)
   from its own folder with RTLD_DEEPBIND, so that libtorch calls its own
   BLAS. liblammps exports the reference BLAS/LAPACK of LAMMPS's bundled
   linalg (dgemm_, dgemv_, ...), under the same names as the MKL inside
   libtorch_cpu; loaded into a LAMMPS process the ordinary way, libtorch's
   float64 matrix products would bind to LAMMPS's and run ~1.5x slower
   (measured: benchmarks/md_speed.py, mpirun -np 1 against in-process).
   With torch already in the process (Python imported it first) nothing
   changes: its library is reused as it is.
------------------------------------------------------------------------- */

#include "error.h"
#include "lammps.h"
#include "lammpsplugin_api.h"

#include <dlfcn.h>
#include <string>

using namespace LAMMPS_NS;

static const char *PAIR_LIBRARY = "eip2nnpair.so";

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto *lammps = (LAMMPS *) lmp;
  Dl_info self;
  if (dladdr((void *) &lammpsplugin_init, &self) == 0 || self.dli_fname == nullptr)
    lammps->error->all(FLERR, "plugin eip2nn: cannot find the folder of eip2nnplugin.so");
  std::string path = self.dli_fname;
  const auto slash = path.rfind('/');
  path = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + PAIR_LIBRARY;

  void *pair_library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (pair_library == nullptr) {
    const char *why = dlerror();
    lammps->error->all(FLERR, "plugin eip2nn: cannot load {}: {} (rebuild: bash scripts/build_lammps_plugin.sh)",
                       path, why ? why : "unknown error");
  }
  auto register_pair = (eip2nn_register_func) dlsym(pair_library, "eip2nn_register_pair");
  if (register_pair == nullptr)
    lammps->error->all(FLERR, "plugin eip2nn: {} has no eip2nn_register_pair", path);
  register_pair(lmp, handle, regfunc);
}
