// Unix stream sockets: listen/accept/connect/socketpair and sendmsg/recvmsg
// carrying up to kMaxFds file descriptors (SCM_RIGHTS).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace vhost_native {

using v8::Array;
using v8::Context;
using v8::FunctionCallbackInfo;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::Object;
using v8::Value;

namespace {

// Closes fd without disturbing errno (cleanup on an error path).
void CloseQuietly(int fd) {
  const int saved = errno;
  close(fd);
  errno = saved;
}

bool SocketAddress(const Args& args, int i, sockaddr_un* addr, socklen_t* len) {
  std::string path;
  if (!args.String(i, "path", &path)) return false;
  if (path.find('\0') != std::string::npos) {
    args.RangeError("path", "must not contain NUL bytes");
    return false;
  }
  if (path.empty() || path.size() >= sizeof addr->sun_path) {
    args.RangeError("path", "must be 1 to " + std::to_string(sizeof addr->sun_path - 1) +
                                " bytes long, received " + std::to_string(path.size()));
    return false;
  }
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

void UnixListen(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "unixListen");
  sockaddr_un addr;
  socklen_t len;
  double backlog = 128;
  if (!SocketAddress(args, 0, &addr, &len)) return;
  if (!args.Missing(1) && !args.Integer(1, "backlog", 0, 2147483647.0, &backlog)) return;
  Isolate* isolate = info.GetIsolate();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(isolate, errno, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    CloseQuietly(fd);
    return ThrowErrno(isolate, errno, "bind");
  }
  if (listen(fd, static_cast<int>(backlog)) != 0) {
    CloseQuietly(fd);
    return ThrowErrno(isolate, errno, "listen");
  }
  info.GetReturnValue().Set(fd);
}

void UnixAccept(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "unixAccept");
  int listen_fd;
  if (!args.Fd(0, "listenFd", &listen_fd)) return;
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().Set(-1);
    return ThrowErrno(info.GetIsolate(), errno, "accept4");
  }
  info.GetReturnValue().Set(fd);
}

void UnixConnect(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "unixConnect");
  sockaddr_un addr;
  socklen_t len;
  if (!SocketAddress(args, 0, &addr, &len)) return;
  Isolate* isolate = info.GetIsolate();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(isolate, errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    CloseQuietly(fd);
    return ThrowErrno(isolate, errno, "connect");
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    CloseQuietly(fd);
    return ThrowErrno(isolate, errno, "fcntl");
  }
  info.GetReturnValue().Set(fd);
}

void Socketpair(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    return ThrowErrno(isolate, errno, "socketpair");
  }
  Local<Value> ends[2] = {Integer::New(isolate, sv[0]), Integer::New(isolate, sv[1])};
  info.GetReturnValue().Set(Array::New(isolate, ends, 2));
}

// Reads (buf, offset, length) at args i..i+2 and checks the range.
bool ByteRange(const Args& args, int i, size_t min_length, uint8_t** start, size_t* length) {
  uint8_t* data;
  size_t size;
  double offset, len;
  if (!args.Bytes(i, "buf", &data, &size) || !args.Integer(i + 1, "offset", 0, kMaxSafeInteger, &offset) ||
      !args.Integer(i + 2, "length", static_cast<double>(min_length), kMaxSafeInteger, &len)) {
    return false;
  }
  if (offset + len > static_cast<double>(size)) {
    args.RangeError("length", "offset + length (" + FormatNumber(offset + len) + ") exceeds the buffer's " +
                                  std::to_string(size) + " bytes");
    return false;
  }
  *start = data + static_cast<size_t>(offset);
  *length = static_cast<size_t>(len);
  return true;
}

void Sendmsg(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "sendmsg");
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  // Read the fd list before taking the buffer's address: reading array
  // elements can run JS (getters) that could detach or shrink the buffer.
  int fds[kMaxFds];
  uint32_t nfds = 0;
  if (!args.Missing(4)) {
    Local<Array> list;
    if (!args.Array(4, "fds", &list)) return;
    nfds = list->Length();
    if (nfds > static_cast<uint32_t>(kMaxFds)) {
      args.RangeError("fds", "may hold at most " + std::to_string(kMaxFds) + " fds, received " + std::to_string(nfds));
      return;
    }
    for (uint32_t k = 0; k < nfds; k++) {
      Local<Value> v;
      if (!list->Get(context, k).ToLocal(&v)) return;
      const double d = v->IsNumber() ? v.As<v8::Number>()->Value() : -1;
      if (!(d >= 0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int>(d))) {
        args.RangeError("fds", "must hold integer fds >= 0, element " + std::to_string(k) + " is not one");
        return;
      }
      fds[k] = static_cast<int>(d);
    }
  }
  uint8_t* start;
  size_t length;
  if (!ByteRange(args, 1, 0, &start, &length)) return;
  if (nfds > 0 && length == 0) {
    // A zero-byte stream write carries nothing, not even the fds.
    args.RangeError("length", "must be > 0 when fds are sent");
    return;
  }
  iovec iov{start, length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (nfds > 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().Set(-1);
    return ThrowErrno(isolate, errno, "sendmsg");
  }
  info.GetReturnValue().Set(static_cast<double>(n));
}

// recvmsg with room for `max_fds` descriptors in the control buffer.
void Recv(const FunctionCallbackInfo<Value>& info, const Args& args, int max_fds) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int fd;
  uint8_t* start;
  size_t length;
  if (!args.Fd(0, "fd", &fd) || !ByteRange(args, 1, 1, &start, &length)) return;
  iovec iov{start, length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (max_fds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(max_fds));
  }
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  std::vector<int> fds;
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return ThrowErrno(isolate, errno, "recvmsg");
    n = -1;
  } else if (msg.msg_controllen > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* p = CMSG_DATA(c);
      for (size_t k = 0; k < count; k++) {
        int received;
        std::memcpy(&received, p + k * sizeof(int), sizeof(int));
        fds.push_back(received);
      }
    }
  }
  if (n >= 0 && (msg.msg_flags & MSG_CTRUNC) != 0) {
    // The kernel closed the fds that did not fit; close the ones that did: the
    // message is unusable and the stream is out of step (fatal for the caller).
    for (int received : fds) close(received);
    Local<Object> error = ThrowCoded(isolate, "ECTRUNC", EMSGSIZE, "recvmsg",
                                     "control data truncated: more fds than fit; " + std::to_string(fds.size()) +
                                         " received fds closed");
    SetProperty(context, error, "bytes", v8::Number::New(isolate, static_cast<double>(n)));
    return;
  }
  std::vector<Local<Value>> values;
  values.reserve(fds.size());
  for (int received : fds) values.push_back(Integer::New(isolate, received));
  Local<Object> result = Object::New(isolate);
  SetProperty(context, result, "bytes", v8::Number::New(isolate, static_cast<double>(n)));
  SetProperty(context, result, "fds", Array::New(isolate, values.data(), values.size()));
  info.GetReturnValue().Set(result);
}

void Recvmsg(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "recvmsg");
  Recv(info, args, kMaxFds);
}

void RecvmsgCapped(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "recvmsgCapped");
  double max_fds;
  if (!args.Integer(4, "maxFds", 0, kMaxFds, &max_fds)) return;
  Recv(info, args, static_cast<int>(max_fds));
}

void Shutdown(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "shutdown");
  int fd;
  if (!args.Fd(0, "fd", &fd)) return;
  if (shutdown(fd, SHUT_RDWR) != 0) ThrowErrno(info.GetIsolate(), errno, "shutdown");
}

}  // namespace

void InitSocket(Local<Object> exports, Local<Context> context) {
  SetMethod(context, exports, "unixListen", UnixListen);
  SetMethod(context, exports, "unixAccept", UnixAccept);
  SetMethod(context, exports, "unixConnect", UnixConnect);
  SetMethod(context, exports, "socketpair", Socketpair);
  SetMethod(context, exports, "sendmsg", Sendmsg);
  SetMethod(context, exports, "recvmsg", Recvmsg);
  SetMethod(context, exports, "recvmsgCapped", RecvmsgCapped);
  SetMethod(context, exports, "shutdown", Shutdown);
}

}  // namespace vhost_native
