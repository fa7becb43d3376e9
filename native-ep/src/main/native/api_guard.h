// The C ABI boundary: runs C++ code, catches every exception and reports it as a status code plus
// a NUL-terminated message in the caller's buffer.
#ifndef NATIVEEP_SRC_API_GUARD_H_
#define NATIVEEP_SRC_API_GUARD_H_

#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "error.h"

namespace nep {

// Copies message into err[0, err_cap), truncating and always NUL-terminating; no-op without buffer.
inline void write_message(char* err, int64_t err_cap, const char* message) {
  if (err == nullptr || err_cap <= 0) return;
  size_t n = std::strlen(message);
  if (n > static_cast<size_t>(err_cap - 1)) n = static_cast<size_t>(err_cap - 1);
  std::memcpy(err, message, n);
  err[n] = '\0';
}

// Runs body(); returns NEP_OK, or the status of the exception it threw with its message in err.
template <class Body>
int32_t guarded(char* err, int64_t err_cap, Body&& body) noexcept {
  try {
    body();
    write_message(err, err_cap, "");
    return NEP_OK;
  } catch (const Error& e) {
    write_message(err, err_cap, e.what());
    return e.code();
  } catch (const std::bad_alloc&) {
    write_message(err, err_cap, "out of memory");
    return NEP_ERR_CAPACITY;
  } catch (const std::exception& e) {
    write_message(err, err_cap, (std::string("internal error: ") + e.what()).c_str());
    return NEP_ERR_INTERNAL;
  } catch (...) {
    write_message(err, err_cap, "internal error: unknown exception");
    return NEP_ERR_INTERNAL;
  }
}

}  // namespace nep

#endif  // NATIVEEP_SRC_API_GUARD_H_
