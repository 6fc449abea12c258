/* Configuration: tables of {name, default, help}, read from CDSM_* variables (internal). */
#ifndef CDSM_CONFIG_H
#define CDSM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* STR: a string of at most max-1 bytes copied into a char array at offset. */
typedef enum { CDSM_CFG_SIZE, CDSM_CFG_INT, CDSM_CFG_BOOL, CDSM_CFG_ENUM, CDSM_CFG_ADDR, CDSM_CFG_STR } cdsm__cfg_type_t;

#define CDSM_CFG_PATH_MAX 1024

typedef struct cdsm__cfg_entry {
    const char *name;    /* environment variable, CDSM_... */
    const char *def;     /* default, in the same syntax as the variable */
    const char *help;    /* one line for the documentation page */
    cdsm__cfg_type_t type;
    size_t offset;       /* where the parsed value goes in struct cdsm__config */
    uint64_t min, max;   /* inclusive bounds for SIZE/INT */
    const char *choices; /* ENUM: comma-separated names, value is the index */
} cdsm__cfg_entry_t;

typedef struct cdsm__cfg_table {
    const char *subsystem;
    const cdsm__cfg_entry_t *entries;
    size_t count;
} cdsm__cfg_table_t;

/* Every setting of the library; filled from defaults, the config file and the environment. */
typedef struct cdsm__config {
    /* heap */
    uint64_t heap_size;
    uint64_t page_size;
    uint64_t heap_addr;
    uint64_t write_detect; /* CDSM_WRITE_DETECT: 0 auto, 1 uffd, 2 mprotect */
    /* protocol */
    uint64_t locks;
    uint64_t gc_bound;
    uint64_t archive_warn;
    uint64_t archive_mem;
    uint64_t whole_page_notices;
    uint64_t hot_idle;
    uint64_t fault_around;
    uint64_t prefetch;
    uint64_t refetch;
    uint64_t ownership;
    uint64_t lazy_release;
    uint64_t publish_releases;
    uint64_t grant_diffs;
    uint64_t bar_fanout;
    uint64_t spin_us;
    uint64_t skip_bells;
    uint64_t shm_diffs;
    uint64_t late_bell_us;
    uint64_t bind;
    uint64_t bind_service;
    uint64_t transport;
    uint64_t node_heap; /* CDSM_NODE_HEAP: 0 auto, 1 required, 2 never */
    uint64_t rma;       /* CDSM_RMA: 0 auto, 1 other hosts, 2 every process, 3 never */
    uint64_t mpi_io_topology;
    /* recovery */
    uint64_t spares;
    uint64_t logging;
    char ckpt_dir[CDSM_CFG_PATH_MAX];
    char restart[CDSM_CFG_PATH_MAX];
    char hdf5_library[CDSM_CFG_PATH_MAX]; /* CDSM_HDF5_LIBRARY: empty, the build's soname */
    char kill_at[64];      /* CDSM_KILL_AT: fault injection (tests) */
    uint64_t ckpt_barriers;
    uint64_t ckpt_seconds;
    uint64_t ckpt_log_size;
    uint64_t ckpt_full_every;
    uint64_t heartbeat_ms;
    uint64_t heartbeat_timeout_ms;
    uint64_t finalize_timeout_ms;
    uint64_t replay_wait_s; /* CDSM_REPLAY_WAIT */
    /* diagnostics */
    uint64_t stats;
    uint64_t output_tags;
    uint64_t log_level;
    uint64_t check;
} cdsm__config_t;

extern cdsm__config_t cdsm__cfg;

/* All tables, for documentation and tests. */
extern const cdsm__cfg_table_t cdsm__cfg_tables[];
extern const size_t cdsm__cfg_ntables;

/* Load defaults, then CDSM_CONFIG_FILE (if set), then CDSM_* variables. On error the
 * message names the variable and the reason; the returned status is CDSM_ERR_CONFIG. */
int cdsm__config_load(cdsm__config_t *cfg);

/* A parsed value as it is written: an enumeration's name (its index v), else the number.
 * Into buf (n bytes), which is returned. */
const char *cdsm__config_value_text(const char *name, uint64_t v, char *buf, size_t n);

/* Parse one value for entry e into cfg (used by the loader and by tests). */
int cdsm__config_set(cdsm__config_t *cfg, const char *name, const char *value, const char *origin);

#ifdef __cplusplus
}
#endif
#endif
