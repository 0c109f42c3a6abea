// File descriptors: close, dup, eventfd, O_NONBLOCK.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common.h"

namespace vhost_native {

using v8::FunctionCallbackInfo;
using v8::Local;
using v8::Value;

namespace {

void Close(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "close");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  // On Linux the fd is released even when close() reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(info.GetIsolate(), errno, "close");
}

void Dup(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "dup");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    ThrowErrno(info.GetIsolate(), errno, "fcntl");
    return;
  }
  info.GetReturnValue().Set(copy);
}

void EventfdCreate(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "eventfdCreate");
  double initval = 0;
  if (!args.Missing(0) && !args.Integer(0, "initval", 0, 4294967295.0, &initval)) return;
  int fd = eventfd(static_cast<unsigned int>(initval), EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    ThrowErrno(info.GetIsolate(), errno, "eventfd");
    return;
  }
  info.GetReturnValue().Set(fd);
}

void EventfdRead(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "eventfdRead");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      info.GetReturnValue().Set(0);
      return;
    }
    ThrowErrno(info.GetIsolate(), errno, "read");
    return;
  }
  if (n != sizeof value) {  // not an eventfd
    ThrowErrno(info.GetIsolate(), EINVAL, "read");
    return;
  }
  const double clamped = value > 9007199254740991ULL ? kMaxSafeInteger : static_cast<double>(value);
  info.GetReturnValue().Set(clamped);
}

void EventfdWrite(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "eventfdWrite");
  int fd;
  double value = 1;
  if (!args.Fd(0, "fd", &fd)) return;
  if (!args.Missing(1) && !args.Integer(1, "value", 0, kMaxSafeInteger, &value)) return;
  const uint64_t v = static_cast<uint64_t>(value);
  ssize_t n;
  do {
    n = write(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      info.GetReturnValue().Set(false);
      return;
    }
    ThrowErrno(info.GetIsolate(), errno, "write");
    return;
  }
  info.GetReturnValue().Set(true);
}

void SetNonBlocking(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "setNonBlocking");
  int fd;
  bool on;
  if (!args.Fd(0, "fd", &fd) || !args.Bool(1, "on", &on)) return;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    ThrowErrno(info.GetIsolate(), errno, "fcntl");
    return;
  }
  const int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (wanted != flags && fcntl(fd, F_SETFL, wanted) != 0) ThrowErrno(info.GetIsolate(), errno, "fcntl");
}

}  // namespace

void InitFds(Local<v8::Object> exports, Local<v8::Context> context) {
  SetMethod(context, exports, "close", Close);
  SetMethod(context, exports, "dup", Dup);
  SetMethod(context, exports, "eventfdCreate", EventfdCreate);
  SetMethod(context, exports, "eventfdRead", EventfdRead);
  SetMethod(context, exports, "eventfdWrite", EventfdWrite);
  SetMethod(context, exports, "setNonBlocking", SetNonBlocking);
}

}  // namespace vhost_native
