# staticref — the two set-up commands are `make demo` and `make test`.
GO       ?= go
BIN      := bin/staticref
STORE    := pebble:.staticref/store
DEMO_DIR := .staticref/demo

.PHONY: all build ort test vet demo testdata clean loadtest bench

all: build

ort: ## fetch the pinned, checksummed ONNX Runtime into lib/libonnxruntime.so
	@./scripts/fetch-ort.sh

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/staticref

vet:
	$(GO) vet ./...

test: ort vet ## the suite CI runs
	$(GO) test -race -timeout 40m ./...

demo: ort build ## generate data, run the demo job into the embedded store, look a few keys up
	$(BIN) testdata generate --out $(DEMO_DIR) --rows 200000 --shards 4
	$(BIN) run --job jobs/demo.yaml --set 'source.uri=$(DEMO_DIR)/features/*.parquet'
	$(BIN) versions list --store $(STORE) --namespace demo
	$(BIN) get --store $(STORE) --namespace demo u000000000 u000000042 u000199999

testdata: build ## regenerate the small fixed copies under testdata/
	$(BIN) testdata generate --out testdata --rows 2000 --shards 2 --row-group-rows 500

loadtest: ort ## lookup service under load with flips, next to redis-benchmark GET (needs redis-server)
	$(GO) run ./cmd/loadtest -duration 10s -clients 16 -flips 30

clean:
	rm -rf bin .staticref

BENCH_FLAGS ?= --repeat 3
bench: ort ## batch throughput: scan, inference, store writes and the whole pipeline (docs/performance.md)
	@mkdir -p docs/bench
	$(GO) run ./cmd/bench --out docs/bench/bench.txt $(BENCH_FLAGS)
