# RSORegistration: set-up, data, tests and the demo on a fresh machine with Python 3 and make.
#   make demo   set up, fetch the real chest CTs, run the demo (one case per scanner preset)
#   make test   set up, fetch the real chest CTs, run the tests
#   make review the browser review app on the demo's XVI-like case (docs/review-app.md)
# A GPU user installs the torch build that matches their CUDA and runs `make TORCH_SPEC= test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
BENCH_VENV ?= .venv-bench
STAMP := $(VENV)/.installed
# Files are UTF-8 whatever the machine's locale (a C locale would read them as ASCII).
export PYTHONUTF8 := 1
# The review app's browser tests drive Debian's chromium (Playwright's own browser download is not used).
CHROMIUM ?= /usr/bin/chromium
REVIEW_ARGS ?=
REVIEW_SCANNER ?= xvi

.PHONY: setup data tcmalloc ssh-server chromium lint test test-fast demo review review-screenshot bench model screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/python -m pip install --quiet -e ".[review,test]"
	touch $(STAMP)

setup: $(STAMP)

data: setup tcmalloc
	$(BIN)/rso-registration fetch-data

# The remote-engine tests start a real sshd on 127.0.0.1 (Testing/Python/service/test_ssh.py). CI runs as
# root on Debian: install OpenSSH there when it is absent (about 10 s); elsewhere those tests say why they skip.
ssh-server:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing openssh-server and openssh-client for the SSH tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null; } || \
	    echo "could not install openssh-server: the SSH tests will be skipped"; \
	  else echo "no sshd and not root on Debian: the SSH tests will be skipped"; fi; \
	fi

# tcmalloc makes the network's CPU steps about 1.6x faster in fp32 (bench/README.md, Speed); the command
# line preloads it when it is installed (rso.service.allocator). Installed here where apt-get can (root).
tcmalloc:
	@ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      libtcmalloc-minimal4 >/dev/null; }; }; } || echo "note: tcmalloc is not installed; the engine runs with glibc's allocator"

# Installs Debian's chromium when it is absent and apt-get can (CI runs as root). Without it the
# browser tests are skipped with the reason, except where RSO_REQUIRE_BROWSER=1 (.ci/run) fails them.
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } || \
	  echo "note: $(CHROMIUM) is absent and could not be installed; the browser tests will be skipped (failed where RSO_REQUIRE_BROWSER=1, as in CI)"

# ruff (configured in pyproject.toml): the linter and the formatter's check, as CI runs them.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: data ssh-server chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: data ssh-server chromium
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: data
	$(BIN)/rso-registration demo --out out/demo $(DEMO_ARGS)

# The review page on the demo's XVI-like case (CBCT phase 0 fixed, phase 5 moving, the simulator's truth for
# TRE); open the address it prints, with its per-run token (from another machine: an SSH tunnel,
# docs/review-app.md). REVIEW_SCANNER=truebeam opens the half-fan one.
review: data
	case=$$($(BIN)/python -c "from rso.evaluation.demo import demo_case; from rso.simulation.simulate import \
	  geometry_path; case = demo_case('$(REVIEW_SCANNER)'); geometry_path(case, 0); geometry_path(case, 5); \
	  print(case)") && \
	$(BIN)/rso-registration review --fixed $$case/cbct_phase0.nii.gz --moving $$case/cbct_phase5.nii.gz \
	  --truth $$case/truth_0_5.nii.gz --fixed-geometry $$case/cbct_phase0_geometry.xml \
	  --moving-geometry $$case/cbct_phase5_geometry.xml $(REVIEW_ARGS)

# The benchmark (bench/README.md). elastix and ANTs are benchmark-only and pin older numpy/scipy,
# so they live in a venv of their own.
$(BENCH_VENV)/.installed: pyproject.toml requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(BENCH_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)")
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[test]" -r requirements-bench.txt
	touch $@

bench: data $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/rso-registration bench $(BENCH_ARGS)

# Maintainers: rebuild the bundled general model and its model card (simulate, train, evaluate; resumable).
# THORAX=DIR: the folder of chest_crop_a/b.nii.gz, two real chest CT crops step 3 also trains on (not on the
# package index; docs/model-card.md).
model: data
	$(BIN)/python scripts/build_demo_model.py $(if $(THORAX),--thorax $(THORAX))

# Maintainers: re-render Resources/Screenshots/slice-view.png offscreen from a real MRML scene: the demo's
# XVI-like case, matched, in the box the demo picks.
screenshot: data
	case=$$($(BIN)/python -c "from rso.evaluation.demo import demo_case; print(demo_case('xvi'))") && \
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(BIN)/python scripts/render_screenshot.py --out Resources/Screenshots/slice-view.png \
	  --fixed $$case/cbct_phase0.nii.gz --moving $$case/cbct_phase5.nii.gz \
	  --fixed-geometry $$case/cbct_phase0_geometry.xml --moving-geometry $$case/cbct_phase5_geometry.xml \
	  --model RSORegistration/rso/resources/general_model.pt --grid 48,80,80 --iso 100 --rso 60 \
	  --region 10.5 220.5 -222.6 50.8 260.7 -184.8

# Maintainers: the README's picture of the review page, taken by its browser test in headless Chromium.
review-screenshot: data chromium
	RSO_REVIEW_SCREENSHOT=docs/figures/review-app.png $(BIN)/python -m pytest -q Testing/Python/review/test_review_browser.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) out .pytest_cache
