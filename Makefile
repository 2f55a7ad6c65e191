# torsh-gen developer tasks. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORSH := $(VENV)/bin/torsh-gen
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-slow conformance conformance-compiled bench generated lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,torch,serve,tflite]"
	touch $(STAMP)

demo: setup
	$(TORSH) inspect examples/tiny_cnn.onnx
	$(TORSH) run examples/tiny_cnn.onnx --input-shape batch=2 --check
	$(TORSH) convert examples/tiny_cnn.onnx -o $(VENV)/demo/tiny_cnn.torsh
	$(TORSH) run $(VENV)/demo/tiny_cnn.torsh --input-shape batch=2 --check
	$(TORSH) compile examples/tiny_cnn.onnx --target cpu -o $(VENV)/demo/tiny_cnn
	$(TORSH) validate examples/tiny_cnn.onnx --artifact $(VENV)/demo/tiny_cnn --input-shape batch=2

test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

conformance: setup
ifdef TARGET
	$(PY) -m torsh_gen.tools.conformance --target $(TARGET) --failures conformance-$(TARGET)-failures.txt --json conformance-$(TARGET).json
else
	$(PY) -m torsh_gen.tools.conformance --failures conformance-failures.txt --json conformance-latest.json
endif

conformance-compiled: setup
	$(PY) -m torsh_gen.tools.conformance --mode compiled --failures conformance-compiled-failures.txt

bench: setup
	$(PY) benchmarks/run.py

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
