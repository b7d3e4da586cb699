# pvae: the two commands a fresh machine needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pvae-installed
RUNS ?= runs

.PHONY: setup demo test lint typecheck pytest bench-tests model bundle escape-study report-quick report-cpu bench-train bench-oip gpu-check \
	clean

$(STAMP): pyproject.toml setup.py scripts/setup.sh $(wildcard pvae/native/*.c)
	VENV=$(VENV) scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

## demo: set up, train and evaluate the quick model, then serve that model and stream a synthetic
## camera pan through it (side-by-side video of model input | reconstruction | spikes, summary in runs/demo/).
demo: setup
	$(BIN)/pvae-train --preset quick --device auto --out $(RUNS)/quick --overwrite
	$(BIN)/pvae-eval $(RUNS)/quick/best.pt --photos --out $(RUNS)/quick/eval.json
	$(BIN)/python -m pvae.clients.demo --model $(RUNS)/quick/best.pt --frames 300 --out $(RUNS)/demo/side_by_side.mp4

## test: set up, lint, type-check, run the test suite (what CI runs).
test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy pvae training export serving clients bench

pytest: setup
	$(BIN)/python -m pytest -q -m "not bench"

## bench-tests: the tests that compare throughput or need a quiet machine (pytest marker `bench`):
## Prometheus's frames/s against the client's, drop_oldest dropping under a slow consumer, perf_analyzer end to end.
bench-tests: setup
	$(BIN)/python -m pytest -q -m bench

## model: retrain the bundled default model (lin|lin, K=512, natural patches), ship it slimmed,
## with a prebuilt ONNX bundle so that a torch-free install can serve it.
model: setup
	$(BIN)/pvae-train --preset default-model --device auto --out $(RUNS)/default-model --overwrite
	$(BIN)/python -m pvae.training.checkpoint slim $(RUNS)/default-model/best.pt pvae/models/default.pt
	$(MAKE) bundle
	$(BIN)/pvae-eval pvae/models/default.pt --photos --gabor --json --device cpu --out docs/default-model-eval.json
	cp $(RUNS)/default-model/basis.png docs/default-model-basis.png
	cp $(RUNS)/default-model/curves.png docs/default-model-curves.png

## bundle: re-export the shipped ONNX bundle from the shipped checkpoint (after an exporter change).
bundle: setup
	rm -rf pvae/models/default_bundle
	$(BIN)/pvae-export pvae/models/default.pt -o pvae/models/default_bundle --formats onnx

## escape-study: does the paper's own prior init leave its starting prior under the paper-era recipe, and
## when? The first 150 epochs of `paper-patches` (mc, CPU: ~40 min) beside the default-model run, in one figure.
escape-study: setup
	$(BIN)/pvae-train --preset paper-patches --device auto --out $(RUNS)/escape-paper --overwrite \
		--stop-after-epochs 150 --eval-every 5 --max-val-samples 5000
	test -f $(RUNS)/default-model/metrics.jsonl || $(MAKE) model
	$(BIN)/python -m pvae.training.plots escape docs/escape.png \
		"paper-era recipe, prior init U(-6,-4), mc=$(RUNS)/escape-paper" \
		"default-model recipe, prior init U(-2,-1), exact=$(RUNS)/default-model"

## report-quick: the paper study on small budgets (< 10 min on a 2-core CPU; indicative numbers).
report-quick: setup
	$(BIN)/pvae-report --quick --out $(RUNS)/report-quick

## report-cpu: the paper study with the paper's protocols (<= 90 min on a 2-core CPU); figures -> docs/report.
report-cpu: setup
	$(BIN)/pvae-report --cpu --out $(RUNS)/report-cpu
	rm -rf docs/report && mkdir -p docs/report
	cp $(RUNS)/report-cpu/report.md $(RUNS)/report-cpu/report.json docs/report/
	cp -r $(RUNS)/report-cpu/figures docs/report/
	$(BIN)/pvae-report --render $(RUNS)/report-cpu --doc docs/reproduction.md
	cp $(RUNS)/report-cpu/report.md $(RUNS)/report-cpu/report.json docs/report/

## gpu-check: on a CUDA host (setup installs onnxruntime-gpu there), every GPU path in <= 5 min: node placement of
## each graph, sampler counts on CUDA vs CPU, pvae-serve --gpu 0 VGA frames/s, training throughput -> $(RUNS)/gpu-check.json.
## Without a GPU it writes status "skipped" with the reason and exits 0.
gpu-check: setup
	$(BIN)/pvae-gpu-check --out $(RUNS)/gpu-check.json

## bench-train: training throughput, adaptive sampler vs Algorithm 1 as written.
bench-train: setup
	$(BIN)/pvae-bench-train

## bench-oip: Triton's perf_analyzer (installed once into $(RUNS)/tools/perf_analyzer) against pvae-serve's
## Open Inference Protocol: pvae_rates 1200x256, unary c=1 and c=4, streaming c=1, vs in-process ONNX Runtime.
bench-oip: setup
	$(BIN)/pvae-bench-oip --prefix $(RUNS)/tools/perf_analyzer --work-dir $(RUNS)/bench-oip \
		--json $(RUNS)/bench-oip/figures.json --plot $(RUNS)/bench-oip/bench-oip.png

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache .mypy_cache
