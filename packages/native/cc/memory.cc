// Memory: mmap into a real SharedArrayBuffer, release, fstat size, seals, memfd.
//
// Every mapping made by mmap() is recorded in a process-wide registry keyed by
// its address. The registry lets release() check that a SharedArrayBuffer came
// from mmap() (and with which length), and lets the backing-store deleter (run
// by V8 on any thread once the last SAB referencing it is collected, in any
// isolate) unmap exactly what was mapped.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "common.h"

namespace vhost_native {

using v8::FunctionCallbackInfo;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::SharedArrayBuffer;
using v8::Value;

namespace {

struct Mapping {
  size_t length;
  bool released;  // overlaid with anonymous memory by release()
};

std::mutex g_mutex;
std::unordered_map<uintptr_t, Mapping> g_mappings;  // guarded by g_mutex
std::atomic<int64_t> g_live{0};      // mapped, not released, not unmapped
std::atomic<int64_t> g_released{0};  // released, overlay not yet unmapped

// V8 backing-store deleter: runs once no SAB (in any isolate) references the
// memory, on whatever thread V8 chooses.
void UnmapDeleter(void* data, size_t length, void* /*deleter_data*/) {
  bool released = false;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_mappings.find(reinterpret_cast<uintptr_t>(data));
    if (it != g_mappings.end()) {
      length = it->second.length;
      released = it->second.released;
      g_mappings.erase(it);
    }
  }
  // The range stays mapped until here, so no other mmap can reuse the address
  // between the erase above and this munmap.
  munmap(data, length);
  (released ? g_released : g_live).fetch_sub(1, std::memory_order_relaxed);
}

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

void Mmap(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "mmap");
  int fd;
  double offset, length;
  if (!args.Fd(0, "fd", &fd) || !args.Integer(1, "offset", 0, kMaxSafeInteger, &offset) ||
      !args.Integer(2, "length", 1, kMaxSafeInteger, &length)) {
    return;
  }
  if (std::fmod(offset, static_cast<double>(PageSize())) != 0) {
    args.RangeError("offset", "must be a multiple of the page size (" + std::to_string(PageSize()) +
                                  "), received " + FormatNumber(offset));
    return;
  }
  const size_t len = static_cast<size_t>(length);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    ThrowErrno(info.GetIsolate(), errno, "mmap");
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_mappings[reinterpret_cast<uintptr_t>(p)] = Mapping{len, false};
  }
  g_live.fetch_add(1, std::memory_order_relaxed);
  std::unique_ptr<v8::BackingStore> store = SharedArrayBuffer::NewBackingStore(p, len, UnmapDeleter, nullptr);
  info.GetReturnValue().Set(SharedArrayBuffer::New(info.GetIsolate(), std::move(store)));
}

void Release(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "release");
  if (info.Length() < 1 || !info[0]->IsSharedArrayBuffer()) {
    args.TypeError("sab", "a SharedArrayBuffer", 0);
    return;
  }
  Local<SharedArrayBuffer> sab = info[0].As<SharedArrayBuffer>();
  void* data = sab->Data();
  const size_t length = sab->ByteLength();
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_mappings.find(reinterpret_cast<uintptr_t>(data));
  if (data == nullptr || it == g_mappings.end() || it->second.length != length) {
    ThrowErrno(info.GetIsolate(), EINVAL, "release");
    return;
  }
  if (it->second.released) return;
  // Replace the guest pages with private zero pages: the shared pages are no
  // longer mapped here (RSS drops now) and stale views read zeros.
  void* p = mmap(data, length, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    ThrowErrno(info.GetIsolate(), errno, "mmap");
    return;
  }
  it->second.released = true;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  g_released.fetch_add(1, std::memory_order_relaxed);
}

void LiveMappings(const FunctionCallbackInfo<Value>& info) {
  info.GetReturnValue().Set(static_cast<double>(g_live.load(std::memory_order_relaxed)));
}

void ReleasedMappings(const FunctionCallbackInfo<Value>& info) {
  info.GetReturnValue().Set(static_cast<double>(g_released.load(std::memory_order_relaxed)));
}

void FstatSize(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "fstatSize");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(info.GetIsolate(), errno, "fstat");
    return;
  }
  info.GetReturnValue().Set(static_cast<double>(st.st_size));
}

void GetSeals(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "getSeals");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    ThrowErrno(info.GetIsolate(), errno, "fcntl");
    return;
  }
  info.GetReturnValue().Set(seals);
}

void AddSeals(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "addSeals");
  int fd;
  double seals;
  if (!args.Fd(0, "fd", &fd) || !args.Integer(1, "seals", 0, 2147483647.0, &seals)) return;
  if (fcntl(fd, F_ADD_SEALS, static_cast<int>(seals)) != 0) {
    ThrowErrno(info.GetIsolate(), errno, "fcntl");
  }
}

void MemfdCreate(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "memfdCreate");
  std::string name;
  if (!args.String(0, "name", &name)) return;
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    ThrowErrno(info.GetIsolate(), errno, "memfd_create");
    return;
  }
  info.GetReturnValue().Set(fd);
}

void Ftruncate(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "ftruncate");
  int fd;
  double length;
  if (!args.Fd(0, "fd", &fd) || !args.Integer(1, "length", 0, kMaxSafeInteger, &length)) return;
  int r;
  do {
    r = ftruncate(fd, static_cast<off_t>(length));
  } while (r != 0 && errno == EINTR);
  if (r != 0) ThrowErrno(info.GetIsolate(), errno, "ftruncate");
}

}  // namespace

void InitMemory(Local<v8::Object> exports, Local<v8::Context> context) {
  SetMethod(context, exports, "mmap", Mmap);
  SetMethod(context, exports, "release", Release);
  SetMethod(context, exports, "liveMappings", LiveMappings);
  SetMethod(context, exports, "releasedMappings", ReleasedMappings);
  SetMethod(context, exports, "fstatSize", FstatSize);
  SetMethod(context, exports, "getSeals", GetSeals);
  SetMethod(context, exports, "addSeals", AddSeals);
  SetMethod(context, exports, "memfdCreate", MemfdCreate);
  SetMethod(context, exports, "ftruncate", Ftruncate);
  Isolate* isolate = context->GetIsolate();
  SetProperty(context, exports, "pageSize", Integer::NewFromUnsigned(isolate, static_cast<uint32_t>(PageSize())));
}

}  // namespace vhost_native
