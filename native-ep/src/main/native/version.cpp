#include "nativeep/c_api.h"
#include "nativeep/export.h"

NEP_EXPORT int32_t nep_abi_version(void) { return 1; }
