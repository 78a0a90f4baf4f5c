#!/usr/bin/env python3
"""Prints the installed llama-cpp-python version, then the folders holding the libllama.so and
the llama.h its wheel installed (one per line); exits 1 when it is not installed."""
import importlib.metadata
import os
import sys

try:
    dist = importlib.metadata.distribution("llama-cpp-python")
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
found = {}
for f in dist.files or []:
    name = os.path.basename(str(f))
    if name in ("libllama.so", "llama.h") and name not in found:
        found[name] = os.path.dirname(os.path.abspath(str(f.locate())))
if len(found) != 2:
    sys.exit(1)
print(dist.version)
print(found["libllama.so"])
print(found["llama.h"])
