/* Loading HDF5 at the first checkpoint read or write (h5shim.h says why). */
#define CDSM_H5_LOADER
#include "h5shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "config.h"

#ifndef CDSM_HDF5_SONAME
#error "CDSM_HDF5_SONAME (the HDF5 library's soname) is set by meson"
#endif

cdsm__h5_table_t cdsm__h5;

static pthread_once_t h5_once = PTHREAD_ONCE_INIT;
static int h5_ok;
static char h5_why[CDSM_CFG_PATH_MAX + 512];

/* Each entry of cdsm__h5: its name in HDF5, whether a variable, where it goes. */
static const struct {
    const char *name;
    int var;
    void **slot;
} h5_syms[] = {
#define CDSM_H5_FN(name) {#name, 0, (void **)&cdsm__h5.p_##name},
#define CDSM_H5_VAR(name) {#name, 1, (void **)&cdsm__h5.p_##name},
    CDSM_H5_SYMBOLS(CDSM_H5_FN, CDSM_H5_VAR)
#undef CDSM_H5_FN
#undef CDSM_H5_VAR
};

static void h5_load_once(void)
{
    /* Never closed: HDF5 closes its files at exit. RTLD_LOCAL: its symbols stay out of
     * the program's namespace, as the program did not link it. */
    const char *lib = cdsm__cfg.hdf5_library[0] ? cdsm__cfg.hdf5_library : CDSM_HDF5_SONAME;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(h5_why, sizeof h5_why, "cannot load HDF5: %s (CDSM_HDF5_LIBRARY names the library to load)",
                 e ? e : lib);
        return;
    }
    for (size_t i = 0; i < sizeof h5_syms / sizeof h5_syms[0]; i++) {
        /* A variable is looked up in the program first: where the program links HDF5
         * itself and uses the variable, the linker moved it into the executable (a copy
         * relocation) and HDF5 uses that copy, not its own. */
        void *p = h5_syms[i].var ? dlsym(RTLD_DEFAULT, h5_syms[i].name) : NULL;
        if (!p) p = dlsym(h, h5_syms[i].name);
        if (!p) {
            snprintf(h5_why, sizeof h5_why, "%s lacks %s: not an HDF5 like the one cdsm was built with (%s, %s)",
                     lib, h5_syms[i].name, H5_VERS_INFO, CDSM_HDF5_SONAME);
            return;
        }
        *h5_syms[i].slot = p;
    }
    h5_ok = 1;
}

int cdsm__h5_load(const char **why)
{
    pthread_once(&h5_once, h5_load_once);
    if (h5_ok) return 0;
    if (why) *why = h5_why;
    return -1;
}
