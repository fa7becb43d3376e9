// Launchers of the cuda-ipc kernels (defined in layout.cu, dispatch.cu, combine.cu).
#ifndef NATIVEEP_CUDA_KERNELS_H_
#define NATIVEEP_CUDA_KERNELS_H_

#include <cuda_runtime.h>

#include "ep_common.cuh"

namespace nep {
namespace cuda {

cudaError_t launch_layout(const LayoutArgs& a, cudaStream_t stream);
cudaError_t launch_notify(const NotifyArgs& a, cudaStream_t stream);
// Cooperative launches (all channels resident at once), a.num_channels blocks.
cudaError_t launch_dispatch(int wire, const DispatchArgs& a, cudaStream_t stream);
cudaError_t launch_combine(int wire, const CombineArgs& a, cudaStream_t stream);
// Resident blocks per SM of the dispatch/combine kernels (cooperative launches need >= 1).
cudaError_t dispatch_max_blocks_per_sm(int wire, int* blocks);
cudaError_t combine_max_blocks_per_sm(int wire, int* blocks);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_KERNELS_H_
