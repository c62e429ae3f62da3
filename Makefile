# staticref — the two set-up commands are `make demo` and `make test`.
SHELL    := bash
GO       ?= go
BIN      := bin/staticref
STORE    := pebble:.staticref/store
DEMO_DIR := .staticref/demo

.PHONY: all build ort test vet fuzz demo testdata clean loadtest loadtest-chain bench redismem proto

all: build

ort: ## fetch the pinned, checksummed ONNX Runtime into lib/libonnxruntime.so
	@./scripts/fetch-ort.sh

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/staticref

vet:
	$(GO) vet ./...

# The object-store servers are installed into a cache on first use (scripts/test-servers.sh);
# scripts/testreport prints go test's results and then the tests skipped for want of a
# Debian package (redis-server, chromium, npm), with the apt-get line that runs them.
test: ort vet ## the suite CI runs, then a short fuzz of the config decoders
	@eval "$$(./scripts/test-servers.sh)" && set -o pipefail && \
		$(GO) test -json -race -timeout 40m ./... | $(GO) run ./scripts/testreport
	$(MAKE) fuzz

# A bounded fuzz of each YAML decoder a user's file reaches (job files, serve configs),
# seeded from their testdata; FUZZTIME each, 30 s in all by default. A finding is written
# to the package's testdata/fuzz/ and fails the target: commit it with the fix.
FUZZTIME ?= 15s
fuzz: ## fuzz the job file and serve config decoders for FUZZTIME each
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./jobs/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./lookup/

demo: ort build ## generate data, run the demo job into the embedded store, look a few keys up
	$(BIN) testdata generate --out $(DEMO_DIR) --rows 200000 --shards 4
	$(BIN) run --job jobs/demo.yaml --set 'source.uri=$(DEMO_DIR)/features/*.parquet'
	$(BIN) versions list --store $(STORE) --namespace demo
	$(BIN) get --store $(STORE) --namespace demo u000000000 u000000042 u000199999

testdata: build ## regenerate the small fixed copies under testdata/
	$(BIN) testdata generate --out testdata --rows 2000 --shards 2 --row-group-rows 500

loadtest: ort ## lookup service under load with flips and a canary, then beside its baselines (needs redis-server, redis-benchmark, wrk)
	$(GO) run ./cmd/loadtest -duration 10s -clients 16 -flips 30 -out docs/loadtest

loadtest-chain: ort ## lookup p99 over a chain of incremental versions (depth 3) against a full version (needs redis-server)
	$(GO) run ./cmd/loadtest -chain -duration 10s -clients 16

clean:
	rm -rf bin .staticref

BENCH_FLAGS ?= --repeat 3
bench: ort ## batch throughput: scan, inference, store writes and the whole pipeline (docs/performance.md)
	@mkdir -p docs/bench
	$(GO) run ./cmd/bench --out docs/bench/bench.txt $(BENCH_FLAGS)

redismem: ort ## Redis memory per row and write speed by layout, json and binary, vs redis-benchmark HSET (needs redis-server)
	@mkdir -p docs/bench
	$(GO) run ./cmd/bench --redismem --rows 1000000 --repeat 3 --out docs/bench/redismem.txt

# The gRPC API's generated code is committed (CI does not regenerate it). Regenerate it
# after editing the .proto: protoc from apt (protobuf-compiler), the plugins pinned here.
PROTO_DIR := lookup/grpcapi
proto: ## regenerate lookup/grpcapi/staticref/v1/*.pb.go from lookup.proto
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	cd $(PROTO_DIR) && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I . \
		--go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. staticref/v1/lookup.proto
