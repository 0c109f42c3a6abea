// Shared helpers of the native layer: Node-style errors and argument checks.
//
// Every exported function validates its JavaScript arguments first (TypeError
// with code ERR_INVALID_ARG_TYPE, RangeError with code ERR_OUT_OF_RANGE) and
// reports syscall failures as an Error with `code`, `errno` and `syscall`.
#pragma once

#include <node.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace vhost_native {

// Largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER).
constexpr double kMaxSafeInteger = 9007199254740991.0;
// Most fds one sendmsg/recvmsg carries (the vhost-user limit).
constexpr int kMaxFds = 8;

// Throws `Error("<syscall>: <CODE> (<strerror>)")` with code, errno, syscall.
void ThrowErrno(v8::Isolate* isolate, int err, const char* syscall);
// Throws an Error with an explicit code/description (e.g. ECTRUNC); returns it
// so the caller can add properties before it propagates.
v8::Local<v8::Object> ThrowCoded(v8::Isolate* isolate, const char* code, int err, const char* syscall,
                                 const std::string& description);
void ThrowTypeError(v8::Isolate* isolate, const std::string& message);
void ThrowRangeError(v8::Isolate* isolate, const std::string& message);
// Sets obj[name] = value, ignoring failure (only used on fresh objects).
void SetProperty(v8::Local<v8::Context> context, v8::Local<v8::Object> obj, const char* name,
                 v8::Local<v8::Value> value);
void SetMethod(v8::Local<v8::Context> context, v8::Local<v8::Object> target, const char* name,
               v8::FunctionCallback callback);
std::string FormatNumber(double value);

// Reads and checks the arguments of one call. Each getter returns false after
// throwing; the caller then returns immediately.
class Args {
 public:
  Args(const v8::FunctionCallbackInfo<v8::Value>& info, const char* fn) : info_(info), fn_(fn) {}

  v8::Isolate* isolate() const { return info_.GetIsolate(); }
  bool Missing(int i) const { return i >= info_.Length() || info_[i]->IsUndefined(); }

  // An integer number in [min, max].
  bool Integer(int i, const char* name, double min, double max, double* out) const;
  // A file descriptor: an integer in [0, 2^31 - 1].
  bool Fd(int i, const char* name, int* out) const;
  bool Bool(int i, const char* name, bool* out) const;
  bool String(int i, const char* name, std::string* out) const;
  bool Function(int i, const char* name, v8::Local<v8::Function>* out) const;
  bool Array(int i, const char* name, v8::Local<v8::Array>* out) const;
  // A Uint8Array: start of its bytes and its byte length.
  bool Bytes(int i, const char* name, uint8_t** data, size_t* length) const;

  void TypeError(const char* name, const char* expected, int i) const;
  void RangeError(const char* name, const std::string& what) const;

 private:
  const v8::FunctionCallbackInfo<v8::Value>& info_;
  const char* fn_;
};

void InitMemory(v8::Local<v8::Object> exports, v8::Local<v8::Context> context);
void InitFds(v8::Local<v8::Object> exports, v8::Local<v8::Context> context);
void InitSocket(v8::Local<v8::Object> exports, v8::Local<v8::Context> context);
void InitPoller(v8::Local<v8::Object> exports, v8::Local<v8::Context> context);
void InitThread(v8::Local<v8::Object> exports, v8::Local<v8::Context> context);

}  // namespace vhost_native
