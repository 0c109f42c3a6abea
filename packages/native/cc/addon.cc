// vhost_native: the only native code of vhost-ts. Mechanism only, no policy.
// Context-aware (NODE_MODULE_INIT), so it loads in the main thread and in every
// worker; each context gets its own functions and Poller class.
#include <poll.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <uv.h>

#include "common.h"

namespace vhost_native {
namespace {

void InitConstants(v8::Local<v8::Object> exports, v8::Local<v8::Context> context) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Object> c = v8::Object::New(isolate);
  auto set = [&](const char* name, int value) { SetProperty(context, c, name, v8::Integer::New(isolate, value)); };
  set("F_SEAL_SEAL", F_SEAL_SEAL);
  set("F_SEAL_SHRINK", F_SEAL_SHRINK);
  set("F_SEAL_GROW", F_SEAL_GROW);
  set("F_SEAL_WRITE", F_SEAL_WRITE);
  set("F_SEAL_FUTURE_WRITE", F_SEAL_FUTURE_WRITE);
  set("MFD_CLOEXEC", MFD_CLOEXEC);
  set("MFD_ALLOW_SEALING", MFD_ALLOW_SEALING);
  set("POLL_READABLE", UV_READABLE);
  set("POLL_WRITABLE", UV_WRITABLE);
  set("POLL_DISCONNECT", UV_DISCONNECT);
  set("POLL_PRIORITIZED", UV_PRIORITIZED);
  set("MAX_FDS", kMaxFds);
  set("POLLIN", POLLIN);
  set("POLLERR", POLLERR);
  set("POLLHUP", POLLHUP);
  set("POLLNVAL", POLLNVAL);
  static_cast<void>(c->SetIntegrityLevel(context, v8::IntegrityLevel::kFrozen).IsJust());
  SetProperty(context, exports, "constants", c);
}

}  // namespace
}  // namespace vhost_native

// node.h's registration macro casts the init function to a type with one more
// parameter (-Wcast-function-type under -Wextra); the cast is Node's own ABI.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-function-type"
NODE_MODULE_INIT(/* exports, module, context */) {
  vhost_native::InitMemory(exports, context);
  vhost_native::InitFds(exports, context);
  vhost_native::InitSocket(exports, context);
  vhost_native::InitPoller(exports, context);
  vhost_native::InitThread(exports, context);
  vhost_native::InitConstants(exports, context);
}
#pragma GCC diagnostic pop
