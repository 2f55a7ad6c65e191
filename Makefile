# torsh-gen developer tasks. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORSH := $(VENV)/bin/torsh-gen
STAMP := $(VENV)/.installed-stamp
# Test processes (pytest-xdist; 0 runs in this process). Most tests compile (numba, LLVM,
# gcc) on one core, so two workers halve the suite on a 2-core machine (25.8 -> 13.1 min
# measured); whole files go to one worker so a module's fixtures are built once.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

.PHONY: setup toolchains demo test test-slow conformance conformance-compiled bench gpu-check generated lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,torch,serve,tflite,tvm]"
	touch $(STAMP)

demo: setup
	$(TORSH) inspect examples/tiny_cnn.onnx
	$(TORSH) run examples/tiny_cnn.onnx --input-shape batch=2 --check
	$(TORSH) convert examples/tiny_cnn.onnx -o $(VENV)/demo/tiny_cnn.torsh
	$(TORSH) run $(VENV)/demo/tiny_cnn.torsh --input-shape batch=2 --check
	$(TORSH) compile examples/tiny_cnn.onnx --target cpu -o $(VENV)/demo/tiny_cnn
	$(TORSH) validate examples/tiny_cnn.onnx --artifact $(VENV)/demo/tiny_cnn --input-shape batch=2

# Native targets' toolchains (see docs/targets.md): commands → the Debian packages that give them.
TOOL_COMMANDS := wasm-ld qemu-aarch64 aarch64-linux-gnu-gcc chromium
TOOL_APT := lld qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross chromium
# Python packages the native tests run artifacts with (not dependencies of torsh-gen itself).
TOOL_PIP := wasmtime>=25,<51
missing_commands = $(foreach t,$(1),$(if $(shell command -v $(t) 2>/dev/null),,$(t)))
MISSING_TOOLS := $(call missing_commands,$(TOOL_COMMANDS) node gcc)
MISSING_PIP := $(if $(wildcard $(PY)),$(shell $(PY) -c "import importlib.util as u; print('' if u.find_spec('wasmtime') else 'wasmtime')" 2>/dev/null),wasmtime)

# Installs what is missing; where apt-get (or root/sudo) is not available it says what is
# missing and goes on: the tests that need a tool skip with the reason.
toolchains: setup
	@SUDO=""; if [ "$$(id -u)" != 0 ]; then command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"; fi; \
	missing="$(strip $(call missing_commands,$(TOOL_COMMANDS)))"; pkgs=""; \
	if [ -n "$$missing" ]; then pkgs="$(TOOL_APT)"; fi; \
	if ! command -v node >/dev/null 2>&1; then pkgs="$$pkgs nodejs"; missing="$$missing node"; fi; \
	if ! command -v gcc >/dev/null 2>&1; then pkgs="$$pkgs gcc libc6-dev"; missing="$$missing gcc"; fi; \
	if [ -z "$$pkgs" ]; then echo "toolchains: all installed"; \
	elif ! command -v apt-get >/dev/null 2>&1 || { [ "$$(id -u)" != 0 ] && [ -z "$$SUDO" ]; }; then \
	  echo "toolchains: cannot install (needs apt-get as root or sudo); missing: $$(echo $$missing);" \
	       "install: $$(echo $$pkgs) (their tests skip)"; \
	else \
	  echo "toolchains: installing $$(echo $$pkgs) for $$(echo $$missing)"; \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; } \
	    || echo "toolchains: apt-get failed; missing: $$(echo $$missing) (their tests skip)"; \
	fi
	@$(PY) -c "import wasmtime" 2>/dev/null || $(PY) -m pip install --quiet "$(TOOL_PIP)" \
	  || echo "toolchains: pip could not install $(TOOL_PIP) (the tests that need it skip)"

# `make test` installs the toolchains first only when some are missing (CI starts with none).
test: setup $(if $(strip $(MISSING_TOOLS) $(MISSING_PIP)),toolchains)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_PARALLEL)

conformance: setup
ifeq ($(BACKEND),tvm)
	$(PY) -m torsh_gen.tools.conformance --target tvm-$(or $(TARGET),cpu) --failures conformance-tvm-failures.txt --json conformance-tvm.json
else ifdef TARGET
	$(PY) -m torsh_gen.tools.conformance --target $(TARGET) --failures conformance-$(TARGET)-failures.txt --json conformance-$(TARGET).json
else
	$(PY) -m torsh_gen.tools.conformance --failures conformance-failures.txt --json conformance-latest.json
endif

conformance-compiled: setup
	$(PY) -m torsh_gen.tools.conformance --mode compiled --failures conformance-compiled-failures.txt

bench: setup
	$(PY) benchmarks/run.py

# The CUDA target on a GPU against onnxruntime and PyTorch (benchmarks/RESULTS-cuda.md); needs
# a CUDA GPU, torch with CUDA and CuPy. Options: GPU_CHECK_ARGS="--batch64 --fp16". Without a
# venv (the lent GPU machines): python3 benchmarks/gpu_check.py
gpu-check: setup
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

generated: setup
	rm -rf generated/tiny_cnn
	$(TORSH) compile examples/tiny_cnn.onnx --target cpu -o generated/tiny_cnn
	$(TORSH) scaffold tests examples/tiny_cnn.onnx --artifact generated/tiny_cnn -o generated/tests_tiny_cnn --force
	$(TORSH) scaffold op MyGelu -o generated/op_example --force
	$(TORSH) scaffold train examples/tiny_cnn.onnx -o generated/train_tiny_cnn --name tiny_cnn --force
	$(TORSH) scaffold serve examples/tiny_cnn.onnx --rest -o generated/serve_rest --force
	$(TORSH) scaffold serve examples/tiny_cnn.onnx --grpc -o generated/serve_grpc --force
	find generated -name __pycache__ -prune -exec rm -rf {} +

lint: setup
	$(VENV)/bin/ruff check torsh_gen tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache conformance-failures.txt
