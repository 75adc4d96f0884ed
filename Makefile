# GeoScale: a thin driver over CMake. `make demo` and `make test` install
# missing Debian packages, build libraft 0.22.1 and GeoScale, then run.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
RAFT_PREFIX = $(abspath $(BUILD))/libraft/prefix
export PKG_CONFIG_PATH := $(RAFT_PREFIX)/lib/pkgconfig:$(PKG_CONFIG_PATH)
export LD_LIBRARY_PATH := $(RAFT_PREFIX)/lib:$(LD_LIBRARY_PATH)

.PHONY: all deps libraft build build-asan test test-unit-asan demo chaos clean

all: build

deps:
	@scripts/install-deps.sh

libraft: deps
	@scripts/build-libraft.sh $(BUILD)

$(BUILD)/CMakeCache.txt: | libraft
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: libraft $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt: | libraft
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGS_SANITIZE=ON

build-asan: libraft $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# Unit tests under ASan+UBSan, then the whole suite (unit, end to end).
test-unit-asan: build-asan
	cd $(ASAN_BUILD) && ctest -L unit --output-on-failure

test: build test-unit-asan
	cd $(BUILD) && ctest --output-on-failure --timeout 600

demo: build
	scripts/demo.sh $(BUILD)

# A seeded fault-injection run of a real 3-node cell, checked for
# linearizability and lost writes (chaos/README.md). Needs root for network
# namespaces (else loopback with pauses instead of partitions).
DURATION ?= 300
SEED     ?= 1
chaos: build
	$(BUILD)/chaos/geoscale-chaos --seed $(SEED) --duration $(DURATION) \
	    --out $(abspath $(BUILD))/chaos-seed$(SEED)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
