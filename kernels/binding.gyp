{
  "targets": [{
    "target_name": "nanomind_kernels",
    "sources": ["src/engine.c", "src/binding.c"],
    "cflags": ["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wno-unused-function"],
    "cflags!": ["-O0", "-O2"],
    "libraries": ["-lm", "-lpthread"]
  }]
}
