/* Status names and messages, generated from CDSM_STATUS_TABLE. */
#include "cdsm.h"

const char *cdsm_strerror(int status)
{
    switch (status) {
#define CDSM_X_MSG(name, value, msg) \
    case value:                      \
        return msg;
        CDSM_STATUS_TABLE(CDSM_X_MSG)
#undef CDSM_X_MSG
    }
    return "unknown status code";
}

const char *cdsm_status_name(int status)
{
    switch (status) {
#define CDSM_X_NAME(name, value, msg) \
    case value:                       \
        return #name;
        CDSM_STATUS_TABLE(CDSM_X_NAME)
#undef CDSM_X_NAME
    }
    return "CDSM_UNKNOWN_STATUS";
}
