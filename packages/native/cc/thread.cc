// Threads: CPU affinity and thread id of the calling thread.
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "common.h"

namespace vhost_native {

using v8::Array;
using v8::Context;
using v8::FunctionCallbackInfo;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::Value;

namespace {

void SetAffinity(const FunctionCallbackInfo<Value>& info) {
  Args args(info, "setAffinity");
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  Local<Array> cpus;
  if (!args.Array(0, "cpus", &cpus)) return;
  const uint32_t n = cpus->Length();
  if (n == 0) {
    args.RangeError("cpus", "must name at least one CPU");
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t k = 0; k < n; k++) {
    Local<Value> v;
    if (!cpus->Get(context, k).ToLocal(&v)) return;
    const double d = v->IsNumber() ? v.As<v8::Number>()->Value() : -1;
    if (!(d >= 0 && d < CPU_SETSIZE) || d != static_cast<double>(static_cast<int>(d))) {
      args.RangeError("cpus", "must hold CPU numbers from 0 to " + std::to_string(CPU_SETSIZE - 1) + ", element " +
                                  std::to_string(k) + " is not one");
      return;
    }
    CPU_SET(static_cast<int>(d), &set);
  }
  // pid 0 = the calling thread (affinity is per thread on Linux).
  if (sched_setaffinity(0, sizeof set, &set) != 0) ThrowErrno(isolate, errno, "sched_setaffinity");
}

void GetAffinity(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return ThrowErrno(isolate, errno, "sched_getaffinity");
  std::vector<Local<Value>> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(Integer::New(isolate, cpu));
  }
  info.GetReturnValue().Set(Array::New(isolate, cpus.data(), cpus.size()));
}

void Gettid(const FunctionCallbackInfo<Value>& info) {
  info.GetReturnValue().Set(static_cast<int>(syscall(SYS_gettid)));
}

}  // namespace

void InitThread(Local<v8::Object> exports, Local<Context> context) {
  SetMethod(context, exports, "setAffinity", SetAffinity);
  SetMethod(context, exports, "getAffinity", GetAffinity);
  SetMethod(context, exports, "gettid", Gettid);
}

}  // namespace vhost_native
