// Stand-in for the CUDA plug-in in builds made without nvcc (NEP_BUILD_CUDA=OFF, or AUTO with no
// CUDA compiler): the same C ABI (include/nativeep/cuda_api.h), where every entry point fails with
// NEP_ERR_UNSUPPORTED and no device is visible. It lets the Java binding of the plug-in build and
// load everywhere, and tells a user who asks for the GPU path why it is missing.
#include <cstring>

#include "nativeep/cuda_api.h"

namespace {

int32_t unsupported(char* err, int64_t cap) {
  static const char kMsg[] =
      "native-ep was built without its CUDA plug-in (no CUDA compiler at build time): rebuild with "
      "nvcc on the PATH "
      "(-Dnep.cuda=ON) to use GPUs";
  if (err != nullptr && cap > 0) {
    std::strncpy(err, kMsg, size_t(cap - 1));
    err[cap - 1] = '\0';
  }
  return NEP_ERR_UNSUPPORTED;
}

}  // namespace

#define NEP_STUB extern "C" __attribute__((visibility("default")))

NEP_STUB int32_t nep_cuda_abi_version(void) { return 3; }
NEP_STUB int32_t nep_cuda_device_count(void) { return 0; }
NEP_STUB int32_t nep_cuda_plugin_abi_version() { return 1; }
NEP_STUB int32_t nep_cuda_malloc(int32_t, int64_t, int64_t*, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_free(int32_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_memcpy(int32_t, int64_t, int64_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_memset(int32_t, int64_t, int32_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_device_info(int32_t, char* name, int64_t name_cap, int64_t*, int64_t*,
                                      int32_t*, char* err, int64_t cap) {
  if (name != nullptr && name_cap > 0) name[0] = '\0';
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_adamw_f32(int32_t, int64_t, int64_t, int64_t, int64_t, int64_t, float,
                                    float, float, float, float, float, float, int32_t, int64_t,
                                    char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_create(int32_t, int32_t, int32_t, int64_t, int64_t,
                                        nep_cuda_buffer** out, char* err, int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_export(const nep_cuda_buffer*, uint8_t*, int64_t, char* err,
                                        int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_connect(nep_cuda_buffer*, const uint8_t*, int64_t, char* err,
                                         int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_nccl_version(int32_t*, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_nccl_unique_id(uint8_t*, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_connect_nccl(nep_cuda_buffer*, const uint8_t*, int64_t, char* err,
                                              int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_transport(const nep_cuda_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_all_reduce_sum(nep_cuda_buffer*, int64_t, int64_t, int32_t, int64_t,
                                         char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_set_timeout(nep_cuda_buffer*, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_buffer_rank(const nep_cuda_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_buffer_world_size(const nep_cuda_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_buffer_device(const nep_cuda_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_buffer_num_device_sms(const nep_cuda_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_buffer_peer_scratch(const nep_cuda_buffer*, int32_t, int64_t*, int64_t*,
                                              char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_sync(nep_cuda_buffer*, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB void nep_cuda_buffer_destroy(nep_cuda_buffer*) {}
NEP_STUB int32_t nep_cuda_layout(nep_cuda_buffer*, int64_t, int64_t, int32_t, int32_t, int64_t,
                                 int64_t, int64_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_dispatch_notify(nep_cuda_buffer*, int64_t, int64_t, int32_t, int32_t,
                                          int32_t, int64_t, nep_cuda_handle** out, char* err,
                                          int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int64_t nep_cuda_handle_num_tokens(const nep_cuda_handle*) { return -1; }
NEP_STUB int64_t nep_cuda_handle_num_recv(const nep_cuda_handle*) { return -1; }
NEP_STUB int32_t nep_cuda_handle_num_topk(const nep_cuda_handle*) { return -1; }
NEP_STUB int32_t nep_cuda_handle_num_experts(const nep_cuda_handle*) { return -1; }
NEP_STUB int32_t nep_cuda_handle_num_local_experts(const nep_cuda_handle*) { return -1; }
NEP_STUB void nep_cuda_handle_recv_tokens_per_expert(const nep_cuda_handle*, int32_t, int32_t*) {}
NEP_STUB void nep_cuda_handle_rank_prefix_matrix(const nep_cuda_handle*, int32_t*) {}
NEP_STUB void nep_cuda_handle_rank_num_tokens(const nep_cuda_handle*, int32_t*) {}
NEP_STUB int32_t nep_cuda_handle_copy_is_token_in_rank(const nep_cuda_handle*, uint8_t*, char* err,
                                                       int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_handle_copy_recv_src_idx(const nep_cuda_handle*, int32_t*, char* err,
                                                   int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB void nep_cuda_handle_destroy(nep_cuda_handle*) {}
NEP_STUB int32_t nep_cuda_dispatch(nep_cuda_buffer*, nep_cuda_handle*, int64_t, int32_t, int64_t,
                                   int32_t, int64_t, int64_t, int64_t, int32_t, int64_t, int64_t,
                                   int32_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_dispatch_wire(nep_cuda_buffer*, nep_cuda_handle*, int64_t, int32_t,
                                        int64_t, int32_t, int64_t, int64_t, int64_t, int64_t,
                                        int64_t, int64_t, int32_t, int64_t, char* err,
                                        int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_decode_wire_rows(int32_t, int32_t, int64_t, int64_t, int64_t, int64_t,
                                           int64_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_combine(nep_cuda_buffer*, const nep_cuda_handle*, int64_t, int32_t,
                                  int64_t, int32_t, int64_t, int64_t, int32_t, int64_t, int32_t,
                                  int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}

// ---- Low-latency mode ---------------------------------------------------------------------------
NEP_STUB int32_t nep_cuda_ll_buffer_create(int32_t, int32_t, int32_t, int64_t, int64_t, int32_t,
                                           int32_t, int32_t, int64_t, nep_cuda_ll_buffer** out,
                                           char* err, int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_buffer_export(const nep_cuda_ll_buffer*, uint8_t*, int64_t, char* err,
                                           int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_buffer_connect(nep_cuda_ll_buffer*, const uint8_t*, int64_t, char* err,
                                            int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_buffer_set_num_sms(nep_cuda_ll_buffer*, int32_t, char* err,
                                                int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_buffer_set_timeout(nep_cuda_ll_buffer*, int64_t, char* err,
                                                int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int64_t nep_cuda_ll_buffer_max_tokens_per_rank(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int64_t nep_cuda_ll_buffer_hidden(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_num_experts(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_num_local_experts(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_max_topk(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_max_wire(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_rank(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_world_size(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_device(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_buffer_num_sms(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int64_t nep_cuda_ll_buffer_bytes(const nep_cuda_ll_buffer*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_sync(nep_cuda_ll_buffer*, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_buffer_poison(nep_cuda_ll_buffer*, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB void nep_cuda_ll_buffer_destroy(nep_cuda_ll_buffer*) {}
NEP_STUB int32_t nep_cuda_ll_dispatch_send(nep_cuda_ll_buffer*, int64_t, int32_t, int64_t, int64_t,
                                           int64_t, int32_t, int32_t, int32_t, int64_t,
                                           nep_cuda_ll_op** out, char* err, int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_dispatch_recv(nep_cuda_ll_op*, int64_t, int32_t, int64_t, int64_t,
                                           int64_t, int64_t, nep_cuda_ll_handle** out, char* err,
                                           int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_combine_send(nep_cuda_ll_buffer*, const nep_cuda_ll_handle*, int64_t,
                                          int32_t, int64_t, int64_t, int32_t, int64_t,
                                          nep_cuda_ll_op** out, char* err, int64_t cap) {
  if (out != nullptr) *out = nullptr;
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_combine_recv(nep_cuda_ll_op*, int64_t, int32_t, int64_t, char* err,
                                          int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_ll_op_kind(const nep_cuda_ll_op*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_op_is_pending(const nep_cuda_ll_op*) { return 0; }
NEP_STUB int64_t nep_cuda_ll_op_call_index(const nep_cuda_ll_op*) { return -1; }
NEP_STUB int64_t nep_cuda_ll_op_num_tokens(const nep_cuda_ll_op*) { return -1; }
NEP_STUB void nep_cuda_ll_op_destroy(nep_cuda_ll_op*) {}
NEP_STUB int64_t nep_cuda_ll_handle_num_tokens(const nep_cuda_ll_handle*) { return -1; }
NEP_STUB int32_t nep_cuda_ll_handle_num_topk(const nep_cuda_ll_handle*) { return -1; }
NEP_STUB int64_t nep_cuda_ll_handle_call_index(const nep_cuda_ll_handle*) { return -1; }
NEP_STUB void nep_cuda_ll_handle_destroy(nep_cuda_ll_handle*) {}
