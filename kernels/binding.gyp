{
  "targets": [{
    "target_name": "nanomind_kernels",
    "sources": ["src/engine.c", "src/elementwise.c", "src/binding.c"],
    "cflags": ["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wno-unused-function", "-Wno-psabi"],
    "cflags!": ["-O0", "-O2"],
    "libraries": ["-lm", "-lpthread"]
  }]
}
