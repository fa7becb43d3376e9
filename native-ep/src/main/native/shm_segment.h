// One POSIX shared-memory segment, mapped read-write: created by its owner under an
// unpredictable name with owner-only permissions and pages reserved up front (so a full
// /dev/shm is an error here, not a SIGBUS later), or opened by name by a peer. The name can be
// unlinked as soon as every peer has mapped it; the mapping outlives the name.
#ifndef NATIVEEP_SRC_SHM_SEGMENT_H_
#define NATIVEEP_SRC_SHM_SEGMENT_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace nep {

class ShmSegment {
 public:
  // Creates "/nep-<32 random hex digits>" of `bytes` bytes (zero-filled).
  static ShmSegment create(size_t bytes);
  // Maps an existing segment; its size must be `bytes`.
  static ShmSegment open(const std::string& name, size_t bytes);

  ShmSegment() = default;
  ~ShmSegment();
  ShmSegment(ShmSegment&& other) noexcept;
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  // Removes the name (idempotent; the mapping stays valid).
  void unlink_name();

  // Removes a segment name, ignoring a name that is already gone.
  static void unlink_by_name(const std::string& name);

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  bool owner_linked_ = false;  // created here and not yet unlinked
};

}  // namespace nep

#endif  // NATIVEEP_SRC_SHM_SEGMENT_H_
