// Errors inside native-ep, the core and the CUDA plug-in alike: C++ code throws nep::Error carrying
// a C ABI status code and a message that names the argument, the value and the limit. The C ABI
// boundary (api_guard.h) turns it into a status and a message in the caller's buffer; nothing here
// aborts the process. Header-only, so the plug-in uses it without linking the core.
#ifndef NATIVEEP_SRC_ERROR_H_
#define NATIVEEP_SRC_ERROR_H_

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "nativeep/c_api.h"

namespace nep {

class Error : public std::runtime_error {
 public:
  Error(int32_t code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int32_t code() const { return code_; }

 private:
  int32_t code_;
};

// The parts written one after another with operator<<.
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

// Builds the message from its parts with operator<< and throws Error(code, message).
template <class... Parts>
[[noreturn]] void fail(int32_t code, const Parts&... parts) {
  throw Error(code, cat(parts...));
}

template <class... Parts>
[[noreturn]] void fail_invalid(const Parts&... parts) {
  fail(NEP_ERR_INVALID_ARGUMENT, parts...);
}

// Throws NEP_ERR_INVALID_ARGUMENT "<name> is null" when a required address is 0.
inline void require_address(int64_t address, const char* name) {
  if (address == 0) fail_invalid(name, " is null");
}

}  // namespace nep

#endif  // NATIVEEP_SRC_ERROR_H_
