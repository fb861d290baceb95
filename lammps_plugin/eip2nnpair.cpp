/* ----------------------------------------------------------------------
   Registration of pair_style eip2nn with LAMMPS: eip2nnpair.so's entry,
   called by the loader eip2nnplugin.so (see there why there are two files)
------------------------------------------------------------------------- */

#include "lammps.h"
#include "lammpsplugin_api.h"
#include "pair_eip2nn.h"

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

extern "C" void eip2nn_register_pair(void *lmp, void *handle, void *regfunc)
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
