# countersign: build, run, test, lint, bench. Everything builds in release: wasmtime is compiled
# once and shared by the host, its tests and the benchmark.

CARGO      ?= cargo
WASM       := wasm32-wasip2
# Components (wasm32-wasip2): the app's, and the test components the host suite drives.
COMPONENTS := -p intake -p policy -p decision -p audit -p slack -p teams -p probe -p trivial -p bad-import -p preinit
NATIVE     := -p countersign -p countersign-kv -p countersign-shared -p countersign-tests
BIN        := target/release/countersign

.PHONY: setup build up test lint fmt bench fuzz schemathesis clean

setup:
	rustup target add $(WASM)

build: setup
	$(CARGO) build --release --target $(WASM) $(COMPONENTS)
	$(CARGO) build --release -p countersign

up: build
	@COUNTERSIGN_BIN=$(BIN) sh scripts/dev-env.sh
	. ./.spin/dev.env && $(BIN) up -f spin.toml

test: build
	COUNTERSIGN_BIN=$(CURDIR)/$(BIN) $(CARGO) test --release $(NATIVE)
	$(CARGO) test --release -p countersign-shared --all-features

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --all-features $(NATIVE) -p countersign-bench -- -D warnings
	$(CARGO) clippy --release --target $(WASM) $(COMPONENTS) -- -D warnings

fmt:
	$(CARGO) fmt --all

# Every fuzz target briefly (FUZZ_SECONDS each; the long local run is 600). Needs a nightly
# toolchain; installs cargo-fuzz when missing.
FUZZ_SECONDS ?= 10
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	sh scripts/fuzz.sh $(FUZZ_SECONDS)

# Property-based API tests: schemathesis runs openapi.yaml against a live `countersign up`
# (fresh secrets and state, a free port); fails on any 5xx or answer the description does not
# allow. Needs Python 3 with pip; installs schemathesis when missing.
SCHEMATHESIS_VERSION ?= 4.32.5
PIP                  ?= python3 -m pip
schemathesis: build
	command -v schemathesis >/dev/null 2>&1 || $(PIP) install schemathesis==$(SCHEMATHESIS_VERSION)
	COUNTERSIGN_BIN=$(BIN) bash scripts/schemathesis.sh

bench: build
	$(CARGO) run --release -p countersign-bench -- --bin $(BIN)

clean:
	$(CARGO) clean
