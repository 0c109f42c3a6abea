{
  "targets": [
    {
      "target_name": "vhost_native",
      "sources": ["cc/addon.cc", "cc/common.cc", "cc/memory.cc", "cc/fds.cc", "cc/socket.cc", "cc/poller.cc", "cc/thread.cc"],
      "cflags_cc": ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"]
    }
  ]
}
