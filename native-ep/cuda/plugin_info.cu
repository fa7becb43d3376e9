// Version of the CUDA plug-in as a whole, asked by the core after dlopen (the cuda-ipc entry points
// themselves are in ep_buffer.cu, declared in include/nativeep/cuda_api.h).
#include <cstdint>

extern "C" __attribute__((visibility("default"))) int32_t nep_cuda_plugin_abi_version() { return 1; }
