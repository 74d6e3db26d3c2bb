# Two commands do all set-up:  `make app`  and  `make test`.
# torch is installed first and pinned to the CPU build that lies on these machines' disk;
# with a GPU, override it:  make test TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
MODEL  ?= ioi
PORT   ?= 8501
STAMP  := $(VENV)/.interp-installed

.PHONY: app test test-all bench gpu-check install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[app,dev,distributed]"
	@touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	INTERP_MODEL=$(MODEL) $(PY) -m streamlit run interp/app/explorer.py \
		--server.address localhost --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# On a machine with a CUDA GPU (install a CUDA torch build, see TORCH above): the parity tests on
# the GPU, then every method on GPT-2-small and Qwen2.5-0.5B shapes in float32 and bfloat16.
gpu-check: $(STAMP)
	INTERP_TEST_DEVICE=cuda $(PY) -m pytest -q -x tests/integration/test_patching.py \
		tests/integration/test_attribution.py tests/integration/test_lens.py \
		tests/integration/test_ablation.py tests/integration/test_devices.py $(PYTEST_ARGS)
	$(PY) benchmarks/real.py --device cuda --tl-patching
	$(PY) benchmarks/real.py --device cuda --dtype bfloat16
	$(PY) benchmarks/real.py --device cuda --shapes qwen --long-only

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
