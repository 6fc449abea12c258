/**
 * @file cdsm/status.h
 * @brief The one status table of cdsm: codes, names and messages come from it.
 */
#ifndef CDSM_STATUS_H
#define CDSM_STATUS_H

/** X(name, value, message): the single source of every status code. */
#define CDSM_STATUS_TABLE(X)                                                              \
    X(CDSM_OK, 0, "success")                                                              \
    X(CDSM_ERR_INVALID_ARG, -1, "invalid argument")                                       \
    X(CDSM_ERR_NOMEM, -2, "out of memory")                                                \
    X(CDSM_ERR_CONFIG, -3, "bad configuration value")                                     \
    X(CDSM_ERR_STATE, -4, "call not valid in the library's current state")                \
    X(CDSM_ERR_MPI, -5, "MPI call failed")                                                \
    X(CDSM_ERR_MPI_THREAD, -6, "MPI was initialised without MPI_THREAD_MULTIPLE")         \
    X(CDSM_ERR_HEAP_MAP, -7, "shared heap could not be mapped at the common address")     \
    X(CDSM_ERR_NET, -8, "doorbell socket error")                                          \
    X(CDSM_ERR_NO_SPACE, -9, "shared heap arena exhausted")                               \
    X(CDSM_ERR_MISMATCH, -10, "ranks disagree on a collective call's arguments")          \
    X(CDSM_ERR_PROTOCOL, -11, "malformed or unexpected protocol message")                 \
    X(CDSM_ERR_PEER_LOST, -12, "a peer rank was lost")                                    \
    X(CDSM_ERR_IO, -13, "file input/output error")                                        \
    X(CDSM_ERR_CORRUPT, -14, "checkpoint file is corrupt or foreign")

/** Status codes: 0 is success, every error is negative. */
typedef enum cdsm_status {
#define CDSM_X_ENUM(name, value, msg) name = value,
    CDSM_STATUS_TABLE(CDSM_X_ENUM)
#undef CDSM_X_ENUM
} cdsm_status_t;

#endif /* CDSM_STATUS_H */
