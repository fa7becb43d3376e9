// Placeholder translation unit replaced by the CUDA transport; keeps the plug-in target non-empty.
#include <cuda_runtime.h>
#include <cstdint>

extern "C" __attribute__((visibility("default"))) int32_t nep_cuda_plugin_abi_version() { return 1; }
