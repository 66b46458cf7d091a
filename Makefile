# Two entry points for a fresh Debian bookworm machine (README.md):
#   make demo   install missing packages, build, run the demo, print a diagnosis
#   make test   install missing packages, build, run the whole test suite (ctest),
#               then the unit tests again under ASan+UBSan
BUILD      ?= build
BUILD_SAN  ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build build-asan demo test test-unit bench format tidy clean image

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_SAN) -DISOSCOPE_SANITIZE=ON -DISOSCOPE_UNIT_ONLY=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_SAN) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure --timeout 600
	cd $(BUILD_SAN) && ctest --output-on-failure -L unit --timeout 300

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

bench: build
	bench/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h' '*.c')

tidy: build
	clang-tidy -p $(BUILD) $$(git ls-files 'common/*.cpp' 'agent/*.cpp' 'collectors/*.cpp' 'correlator/*.cpp' 'exporters/*.cpp')

clean:
	rm -rf $(BUILD) $(BUILD_SAN)

# The agent's OCI image archive (scripts/build-image.py): /usr/bin/isoscope, the libraries ldd
# reports for it, and nothing else; no registry, no base image. Import it with
# `ctr -n k8s.io images import $(BUILD)/image/isoscope-oci.tar` (docker.io/library/isoscope:latest,
# the image deploy/ references).
image: build
	python3 scripts/build-image.py $(BUILD) $(BUILD)/image/isoscope-oci.tar
