# mixsql: `make demo` and `make test` are all a fresh machine needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CATALOG ?= .mixsql

.PHONY: demo test install bench clean sample-data golden-update example

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: the CPU build is on disk; a looser range could pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(CATALOG)
	$(BIN)/mixsql --catalog $(CATALOG) register corpus 'sample_data/parquet/*.parquet' --tokenizer sample_data/tokenizer.json
	$(BIN)/mixsql --catalog $(CATALOG) register corpus_jsonl 'sample_data/jsonl/*.jsonl*'
	$(BIN)/mixsql --catalog $(CATALOG) register images sample_data/images/webdataset/
	$(BIN)/mixsql --catalog $(CATALOG) register pairs sample_data/images/parquet/
	$(BIN)/mixsql --catalog $(CATALOG) sql "SELECT domain, language, count(*) AS samples FROM corpus GROUP BY ALL ORDER BY samples DESC LIMIT 12"
	$(BIN)/mixsql --catalog $(CATALOG) explain sample_data/pretrain.mixsql
	$(BIN)/mixsql --catalog $(CATALOG) head sample_data/pretrain.mixsql -n 6 --columns component,language,origin,text
	$(BIN)/mixsql --catalog $(CATALOG) head sample_data/pretrain.mixsql -n 2 --seq-len 128
	$(BIN)/mixsql --catalog $(CATALOG) cache sample_data/pretrain.mixsql --columns text
	$(BIN)/mixsql --catalog $(CATALOG) explain sample_data/tokens.mixsql --seq-len 512 --pack component
	$(BIN)/mixsql --catalog $(CATALOG) explain sample_data/curriculum.mixsql --param min_quality=0.3
	$(BIN)/mixsql --catalog $(CATALOG) head sample_data/curriculum.mixsql --param min_quality=0.3 -n 4 --columns component,quality,text
	$(BIN)/mixsql --catalog $(CATALOG) explain sample_data/vlm.mixsql
	$(BIN)/mixsql --catalog $(CATALOG) head sample_data/vlm.mixsql -n 6 --columns component,key,image_format,image_bytes,aesthetic,caption,text

example: $(STAMP)
	$(BIN)/torchrun --nproc-per-node 2 examples/train.py --config examples/configs/tiny_ado.yaml --out runs/ado --plot

test: $(STAMP)
	$(BIN)/python -m pytest

golden-update: $(STAMP)
	MIXSQL_GOLDEN_UPDATE=1 $(BIN)/python -m pytest tests/test_golden.py

sample-data: $(STAMP)
	$(BIN)/python sample_data/build.py
	$(BIN)/python sample_data/build_images.py

clean:
	rm -rf $(VENV) $(CATALOG) *.egg-info .pytest_cache

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/packing.py
	$(BIN)/python bench/remote.py
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/ranks.py
	$(BIN)/python bench/scale.py
