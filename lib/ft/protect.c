/* cdsm_protect(): the program's private regions that checkpoints hold (ckpt.c copies them
 * at a checkpoint and back at cdsm_resume). */
#include <stdlib.h>
#include <string.h>

#include "ckpt_file.h"
#include "recovery.h"

static cdsm__region_t *regions;
static size_t nregions;

const cdsm__region_t *cdsm__protect_regions(size_t *n)
{
    *n = nregions;
    return regions;
}

cdsm__region_t *cdsm__protect_find(const char *name)
{
    for (size_t i = 0; i < nregions; i++)
        if (!strcmp(regions[i].name, name)) return &regions[i];
    return NULL;
}

int cdsm_protect(const char *name, void *ptr, size_t size)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_protect before cdsm_init");
    if (!cdsm__ckpt_region_name_ok(name))
        return cdsm__error(CDSM_ERR_INVALID_ARG,
                           "cdsm_protect(\"%.64s\"): a name is 1..%d bytes, without '/', not starting with '.'",
                           name ? name : "(null)", CDSM_CKPT_NAME_MAX);
    if (!ptr || !size) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_protect(\"%s\"): NULL pointer or size 0", name);
    const char *a = ptr;
    if (a < cdsm__heap.base + cdsm__heap.heap_size && a + size > cdsm__heap.base)
        return cdsm__error(CDSM_ERR_INVALID_ARG,
                           "cdsm_protect(\"%s\"): %p..+%zu is in the shared heap, which checkpoints hold already",
                           name, ptr, size);
    pthread_mutex_lock(&g->mu);
    int rc = CDSM_OK;
    if (cdsm__protect_find(name)) {
        rc = cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_protect(\"%s\"): name registered already", name);
        goto out;
    }
    cdsm__region_t *v = realloc(regions, (nregions + 1) * sizeof *v);
    char *nm = strdup(name);
    if (v) regions = v;
    if (!v || !nm) {
        free(nm);
        rc = cdsm__error(CDSM_ERR_NOMEM, "cdsm_protect(\"%s\")", name);
        goto out;
    }
    regions[nregions++] = (cdsm__region_t){nm, ptr, size};
out:
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int cdsm_unprotect(const char *name)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_unprotect before cdsm_init");
    if (!name) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_unprotect(NULL)");
    pthread_mutex_lock(&g->mu);
    cdsm__region_t *r = cdsm__protect_find(name);
    int rc = CDSM_OK;
    if (!r) {
        rc = cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_unprotect(\"%s\"): no region of that name", name);
    } else {
        free(r->name);
        *r = regions[--nregions];
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void cdsm__protect_fini(void)
{
    for (size_t i = 0; i < nregions; i++) free(regions[i].name);
    free(regions);
    regions = NULL;
    nregions = 0;
}
