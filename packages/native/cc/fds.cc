// File descriptors: close, dup, eventfd, O_NONBLOCK, a blocking poll for readability.
#include <fcntl.h>
#include <poll.h>
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

// pollReadable(fds: Int32Array, count, timeoutMs): poll(2) for POLLIN on
// fds[0 .. count), blocking the calling thread (meant for a worker thread that
// would otherwise sleep in Atomics.wait). revents go to fds[count + i]. Returns
// how many fds have revents (0 on timeout or EINTR). A negative fd is ignored
// (poll's rule), a closed one reports POLLNVAL.
constexpr int kMaxPollFds = 64;

void PollReadable(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "pollReadable");
  if (info.Length() < 1 || !info[0]->IsInt32Array()) {
    args.TypeError("fds", "an Int32Array", 0);
    return;
  }
  double count, timeout;
  if (!args.Integer(1, "count", 0, kMaxPollFds, &count) || !args.Integer(2, "timeoutMs", -1, 2147483647.0, &timeout)) return;
  Local<v8::Int32Array> view = info[0].As<v8::Int32Array>();
  const size_t n = static_cast<size_t>(count);
  if (view->Length() < 2 * n) {
    args.RangeError("fds", "must hold 2 * count entries (fds, then room for their revents)");
    return;
  }
  auto* words = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(view->Buffer()->Data()) + view->ByteOffset());
  struct pollfd pfds[kMaxPollFds];
  for (size_t i = 0; i < n; i++) pfds[i] = {words[i], POLLIN, 0};
  const int r = poll(pfds, n, static_cast<int>(timeout));
  if (r < 0) {
    if (errno == EINTR) {
      info.GetReturnValue().Set(0);
      return;
    }
    ThrowErrno(info.GetIsolate(), errno, "poll");
    return;
  }
  for (size_t i = 0; i < n; i++) words[n + i] = pfds[i].revents;
  info.GetReturnValue().Set(r);
}

}  // namespace

void InitFds(Local<v8::Object> exports, Local<v8::Context> context) {
  SetMethod(context, exports, "close", Close);
  SetMethod(context, exports, "dup", Dup);
  SetMethod(context, exports, "eventfdCreate", EventfdCreate);
  SetMethod(context, exports, "eventfdRead", EventfdRead);
  SetMethod(context, exports, "eventfdWrite", EventfdWrite);
  SetMethod(context, exports, "setNonBlocking", SetNonBlocking);
  SetMethod(context, exports, "pollReadable", PollReadable);
}

}  // namespace vhost_native
