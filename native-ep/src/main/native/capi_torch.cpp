// C ABI: the data address of a libtorch tensor (DJL's PyTorch engine), CPU or GPU, without a copy;
// and libtorch's C++ log threshold (its one-time warnings go straight to the process's stderr).
//
// DJL's NDArray handle is the address of a heap at::Tensor. libtorch exports the instances of
// at::TensorBase::mutable_data_ptr<T>() for every element type; a non-virtual member function
// takes `this` as its first argument (Itanium C++ ABI), so the exported symbol is called with the
// handle. No libtorch header is needed and the library is looked up where it is already loaded.
#include <dlfcn.h>

#include <exception>
#include <string>

#include "api_guard.h"
#include "nativeep/c_api.h"
#include "nativeep/export.h"

namespace {

// Mangled at::TensorBase::mutable_data_ptr<T>() const for each NEP_TORCH_* element type.
const char* mutable_data_ptr_symbol(int32_t element_type) {
  switch (element_type) {
    case NEP_TORCH_FLOAT32: return "_ZNK2at10TensorBase16mutable_data_ptrIfEEPT_v";
    case NEP_TORCH_FLOAT16: return "_ZNK2at10TensorBase16mutable_data_ptrIN3c104HalfEEEPT_v";
    case NEP_TORCH_INT64: return "_ZNK2at10TensorBase16mutable_data_ptrIlEEPT_v";
    case NEP_TORCH_INT32: return "_ZNK2at10TensorBase16mutable_data_ptrIiEEPT_v";
    case NEP_TORCH_UINT8: return "_ZNK2at10TensorBase16mutable_data_ptrIhEEPT_v";
    case NEP_TORCH_BOOL: return "_ZNK2at10TensorBase16mutable_data_ptrIbEEPT_v";
    case NEP_TORCH_FLOAT64: return "_ZNK2at10TensorBase16mutable_data_ptrIdEEPT_v";
    default: return nullptr;
  }
}

// A loaded libtorch library's handle (RTLD_NOLOAD: never loads it), released on scope exit.
class LoadedLibrary {
 public:
  explicit LoadedLibrary(const char* soname) : h_(dlopen(soname, RTLD_LAZY | RTLD_NOLOAD)) {}
  ~LoadedLibrary() {
    if (h_ != nullptr) dlclose(h_);
  }
  LoadedLibrary(const LoadedLibrary&) = delete;
  LoadedLibrary& operator=(const LoadedLibrary&) = delete;
  void* symbol(const char* name) const { return dlsym(h_ != nullptr ? h_ : RTLD_DEFAULT, name); }

 private:
  void* h_;
};

}  // namespace

NEP_EXPORT int32_t nep_torch_data_address(int64_t tensor, int32_t element_type, int64_t* address,
                                          char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (address == nullptr) nep::fail_invalid("address is null");
    *address = 0;
    if (tensor == 0) nep::fail_invalid("tensor is null");
    const char* name = mutable_data_ptr_symbol(element_type);
    if (name == nullptr)
      nep::fail_invalid("element_type = ", element_type, " is not a NEP_TORCH_* type (0..6)");
    const LoadedLibrary torch("libtorch_cpu.so");
    using DataPtrFn = void* (*)(const void* self);
    auto fn = reinterpret_cast<DataPtrFn>(torch.symbol(name));
    if (fn == nullptr)
      nep::fail(NEP_ERR_UNSUPPORTED, "libtorch is not loaded in this process, or it lacks ", name,
                " (start DJL's PyTorch engine first)");
    void* p = nullptr;
    try {
      p = fn(reinterpret_cast<const void*>(tensor));
    } catch (const std::exception& e) {
      nep::fail_invalid("libtorch refused the tensor's data pointer: ", e.what());
    } catch (...) {
      nep::fail_invalid("libtorch refused the tensor's data pointer");
    }
    *address = reinterpret_cast<int64_t>(p);
  });
}

NEP_EXPORT int32_t nep_torch_set_log_level(int32_t level, int32_t* previous, char* err,
                                           int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (previous != nullptr) *previous = -1;
    if (level < 0 || level > 3)
      nep::fail_invalid("level = ", level, " is outside [0, 3] (info, warning, error, fatal)");
    const LoadedLibrary c10("libc10.so");
    // A global C++ variable: its symbol is its plain name.
    auto* flag = static_cast<int*>(c10.symbol("FLAGS_caffe2_log_level"));
    if (flag == nullptr)
      nep::fail(NEP_ERR_UNSUPPORTED,
                "libc10 is not loaded in this process, or it lacks FLAGS_caffe2_log_level"
                " (start DJL's PyTorch engine first)");
    if (previous != nullptr) *previous = *flag;
    *flag = level;
  });
}
