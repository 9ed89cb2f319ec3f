#include <guestfs.h>
#include <stdint.h>

/* Swift cannot import variadic functions or the UINT64_C(1)<<n bitmask macros. */
static inline guestfs_h *remedy_guestfs_create_no_environment(void) {
    return guestfs_create_flags(GUESTFS_CREATE_NO_ENVIRONMENT);
}
static const uint64_t REMEDY_ADD_DRIVE_READONLY = GUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK;
static const uint64_t REMEDY_ADD_DRIVE_FORMAT = GUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK;
static const uint64_t REMEDY_ADD_DRIVE_CACHEMODE = GUESTFS_ADD_DRIVE_OPTS_CACHEMODE_BITMASK;
static const uint64_t REMEDY_MKFS_LABEL = GUESTFS_MKFS_OPTS_LABEL_BITMASK;
