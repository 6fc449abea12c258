/* HDF5 reached through a table that h5load.c fills at the first checkpoint read or write,
 * not through the dynamic linker at start-up (internal to lib/ft).
 *
 * Why: HDF5 brings about 30 shared libraries with it (curl, TLS, Kerberos, LDAP), and
 * loading them cost each process 6-8 ms at every start, twice for a SPLASH program that
 * re-executes itself with address-space randomisation off, while a run without
 * CDSM_CKPT_DIR never writes a checkpoint (DESIGN.md, "Start-up"). Include this instead
 * of <hdf5.h>: every HDF5 function and global the checkpoint files use becomes a call
 * through cdsm__h5. One used without an entry here is an undefined symbol at link time.
 * The names are those HDF5 1.10 (Debian 12) exports after its API-version macros; an HDF5
 * whose macros map to other names fails the build or the load, naming the symbol. */
#ifndef CDSM_H5SHIM_H
#define CDSM_H5SHIM_H

#include <hdf5.h>

/* F: functions, V: global variables (the ids behind H5T_NATIVE_*, H5P_FILE_ACCESS). */
#define CDSM_H5_SYMBOLS(F, V)                                                                       \
    F(H5open) F(H5check_version)                                                                    \
    F(H5Aclose) F(H5Acreate2) F(H5Aexists) F(H5Aget_space) F(H5Aget_type) F(H5Aopen) F(H5Aread)     \
    F(H5Awrite)                                                                                     \
    F(H5Dclose) F(H5Dcreate2) F(H5Dget_space) F(H5Dget_storage_size) F(H5Dopen2) F(H5Dread)         \
    F(H5Dwrite)                                                                                     \
    F(H5Eget_auto2) F(H5Eset_auto2) F(H5Ewalk2)                                                     \
    F(H5Fclose) F(H5Fcreate) F(H5Fopen)                                                             \
    F(H5Gclose) F(H5Gcreate2) F(H5Gopen2)                                                           \
    F(H5Lexists) F(H5Literate)                                                                      \
    F(H5Pclose) F(H5Pcreate) F(H5Pset_fclose_degree) F(H5Pset_libver_bounds)                        \
    F(H5Sclose) F(H5Screate) F(H5Screate_simple) F(H5Sget_simple_extent_dims)                       \
    F(H5Sget_simple_extent_ndims) F(H5Sget_simple_extent_type)                                      \
    F(H5Tclose) F(H5Tcopy) F(H5Tget_class) F(H5Tget_size) F(H5Tis_variable_str) F(H5Tset_size)      \
    F(H5Tset_strpad)                                                                                \
    V(H5P_CLS_FILE_ACCESS_ID_g) V(H5T_C_S1_g) V(H5T_NATIVE_INT64_g) V(H5T_NATIVE_UINT32_g)          \
    V(H5T_NATIVE_UINT64_g) V(H5T_NATIVE_UINT8_g) V(H5T_STD_I64LE_g) V(H5T_STD_U32LE_g)              \
    V(H5T_STD_U64LE_g) V(H5T_STD_U8LE_g)

#define CDSM_H5_ENTRY(name) __typeof__(name) *p_##name;
typedef struct cdsm__h5_table {
    CDSM_H5_SYMBOLS(CDSM_H5_ENTRY, CDSM_H5_ENTRY)
} cdsm__h5_table_t;
#undef CDSM_H5_ENTRY

extern cdsm__h5_table_t cdsm__h5;

/* Load HDF5 (once per process, thread-safe). 0 when the table is filled; else -1 and
 * *why says why (the library that could not be loaded, or the symbol it lacks). */
int cdsm__h5_load(const char **why);

#ifndef CDSM_H5_LOADER
#define H5open (*cdsm__h5.p_H5open)
#define H5check_version (*cdsm__h5.p_H5check_version)
#define H5Aclose (*cdsm__h5.p_H5Aclose)
#define H5Acreate2 (*cdsm__h5.p_H5Acreate2)
#define H5Aexists (*cdsm__h5.p_H5Aexists)
#define H5Aget_space (*cdsm__h5.p_H5Aget_space)
#define H5Aget_type (*cdsm__h5.p_H5Aget_type)
#define H5Aopen (*cdsm__h5.p_H5Aopen)
#define H5Aread (*cdsm__h5.p_H5Aread)
#define H5Awrite (*cdsm__h5.p_H5Awrite)
#define H5Dclose (*cdsm__h5.p_H5Dclose)
#define H5Dcreate2 (*cdsm__h5.p_H5Dcreate2)
#define H5Dget_space (*cdsm__h5.p_H5Dget_space)
#define H5Dget_storage_size (*cdsm__h5.p_H5Dget_storage_size)
#define H5Dopen2 (*cdsm__h5.p_H5Dopen2)
#define H5Dread (*cdsm__h5.p_H5Dread)
#define H5Dwrite (*cdsm__h5.p_H5Dwrite)
#define H5Eget_auto2 (*cdsm__h5.p_H5Eget_auto2)
#define H5Eset_auto2 (*cdsm__h5.p_H5Eset_auto2)
#define H5Ewalk2 (*cdsm__h5.p_H5Ewalk2)
#define H5Fclose (*cdsm__h5.p_H5Fclose)
#define H5Fcreate (*cdsm__h5.p_H5Fcreate)
#define H5Fopen (*cdsm__h5.p_H5Fopen)
#define H5Gclose (*cdsm__h5.p_H5Gclose)
#define H5Gcreate2 (*cdsm__h5.p_H5Gcreate2)
#define H5Gopen2 (*cdsm__h5.p_H5Gopen2)
#define H5Lexists (*cdsm__h5.p_H5Lexists)
#define H5Literate (*cdsm__h5.p_H5Literate)
#define H5Pclose (*cdsm__h5.p_H5Pclose)
#define H5Pcreate (*cdsm__h5.p_H5Pcreate)
#define H5Pset_fclose_degree (*cdsm__h5.p_H5Pset_fclose_degree)
#define H5Pset_libver_bounds (*cdsm__h5.p_H5Pset_libver_bounds)
#define H5Sclose (*cdsm__h5.p_H5Sclose)
#define H5Screate (*cdsm__h5.p_H5Screate)
#define H5Screate_simple (*cdsm__h5.p_H5Screate_simple)
#define H5Sget_simple_extent_dims (*cdsm__h5.p_H5Sget_simple_extent_dims)
#define H5Sget_simple_extent_ndims (*cdsm__h5.p_H5Sget_simple_extent_ndims)
#define H5Sget_simple_extent_type (*cdsm__h5.p_H5Sget_simple_extent_type)
#define H5Tclose (*cdsm__h5.p_H5Tclose)
#define H5Tcopy (*cdsm__h5.p_H5Tcopy)
#define H5Tget_class (*cdsm__h5.p_H5Tget_class)
#define H5Tget_size (*cdsm__h5.p_H5Tget_size)
#define H5Tis_variable_str (*cdsm__h5.p_H5Tis_variable_str)
#define H5Tset_size (*cdsm__h5.p_H5Tset_size)
#define H5Tset_strpad (*cdsm__h5.p_H5Tset_strpad)
#define H5P_CLS_FILE_ACCESS_ID_g (*cdsm__h5.p_H5P_CLS_FILE_ACCESS_ID_g)
#define H5T_C_S1_g (*cdsm__h5.p_H5T_C_S1_g)
#define H5T_NATIVE_INT64_g (*cdsm__h5.p_H5T_NATIVE_INT64_g)
#define H5T_NATIVE_UINT32_g (*cdsm__h5.p_H5T_NATIVE_UINT32_g)
#define H5T_NATIVE_UINT64_g (*cdsm__h5.p_H5T_NATIVE_UINT64_g)
#define H5T_NATIVE_UINT8_g (*cdsm__h5.p_H5T_NATIVE_UINT8_g)
#define H5T_STD_I64LE_g (*cdsm__h5.p_H5T_STD_I64LE_g)
#define H5T_STD_U32LE_g (*cdsm__h5.p_H5T_STD_U32LE_g)
#define H5T_STD_U64LE_g (*cdsm__h5.p_H5T_STD_U64LE_g)
#define H5T_STD_U8LE_g (*cdsm__h5.p_H5T_STD_U8LE_g)
#endif

#endif
