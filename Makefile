# Thin wrapper around CMake. `make run` and `make test` do all the set-up on
# a fresh Debian 12 machine (they call scripts/deps.sh, which installs the
# Debian packages that are missing).
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIR_WERROR=ON

.PHONY: all deps build run test test-asan test-tsan fuzz bench check clean

all: build

deps:
	./scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# The main job: a working router over built-in mock providers and one
# example request (plain and streamed, with a failover).
run: build
	./scripts/run-demo.sh $(BUILD)/airouter

# Every test: unit, golden wire tests, integration tests against real mock
# servers, install/consumer checks, plus the source checks.
test: build
	./scripts/check-source.sh
	ctest --test-dir $(BUILD) --output-on-failure -j 2

# The sanitizer runs include install/consumers: it builds its hosts with the
# same -fsanitize flags (tests/install/consumers.sh), so the instrumented
# library loads.
test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAIR_WERROR=ON -DAIR_SANITIZE=address,undefined -DAIR_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j 2

test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIR_WERROR=ON -DAIR_SANITIZE=thread -DAIR_BUILD_BENCH=OFF
	cmake --build build-tsan -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tsan.supp" \
		ctest --test-dir build-tsan --output-on-failure -j 2

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DAIR_FUZZ=ON -DAIR_BUILD_TESTS=OFF -DAIR_BUILD_BENCH=OFF -DAIR_BUILD_TOOLS=OFF
	cmake --build build-fuzz -j $(JOBS)
	./scripts/fuzz-smoke.sh build-fuzz $(or $(FUZZ_SECONDS),20)

bench: build
	$(BUILD)/airouter bench --concurrency 64 --duration 5 --warmup 1

check:
	./scripts/check-source.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz
