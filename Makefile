# systolic-npu: every target installs what it needs on first use.
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
FPGA_STAMP := $(VENV)/.fpga-installed
COMPONENT ?= npu
CONFIG   ?=
JOBS     ?= auto

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all demo demo-serial-sim demo-gemm test fuzz verilog synth bitstream lint bench bench-fpga clean distclean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

iverilog-installed:
	@command -v iverilog >/dev/null || { \
	  echo "installing iverilog (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; }

# The compiled Verilator harness (sim/compiled_harness.py): g++, and lz4 for FST waveforms.
cxx-installed:
	@{ command -v g++ >/dev/null && test -e /usr/include/lz4.h; } || { \
	  echo "installing g++ and liblz4-dev (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ make liblz4-dev >/dev/null; }

.PHONY: iverilog-installed cxx-installed

# make demo: both examples on the Verilator-simulated chip.  make demo BACKEND=serial
# PORT=/dev/ttyUSB0: the digits MLP on a board loaded with `make bitstream LINK=serial`.
# make demo-serial-sim: the digits MLP over the serial backend on the simulated board.
BACKEND  ?= verilator
PORT     ?=
demo: $(STAMP) cxx-installed
ifeq ($(BACKEND),serial)
	$(PY) -m examples.digits.run --backend serial --port "$(PORT)" --config "$(CONFIG)"
else
	$(PY) -m examples.digits.run --backend $(BACKEND) --config "$(CONFIG)"
	$(PY) -m examples.digits_cnn.run --backend $(BACKEND) --config "$(CONFIG)"
endif

# FAULTS=0.01: that share of the bytes each way flipped or dropped (half each).
FAULTS   ?= 0
demo-serial-sim: $(STAMP) cxx-installed
	$(PY) -m examples.digits.serial_sim --config "$(CONFIG)" --faults $(FAULTS)

demo-gemm: $(STAMP)
	$(PY) -m examples.gemm.run --config "$(CONFIG)"

# The fpga extra too: the suite synthesizes the default chip's board top (tests/boards).
test: $(FPGA_STAMP) iverilog-installed cxx-installed
	$(PY) -m pytest -n $(JOBS) tests

# Random command streams on the compiled chip against the golden model (sim/fuzz.py):
# make fuzz SEED=1 BUDGET=1800 [FUZZ_CONFIG=all]
SEED     ?= 1
BUDGET   ?= 300
FUZZ_CONFIG ?= 4x4
fuzz: $(STAMP) cxx-installed
	$(PY) -m sim.fuzz --seed $(SEED) --budget $(BUDGET) --config $(FUZZ_CONFIG)

verilog: $(STAMP)
	$(PY) -m hw.generate --config "$(CONFIG)" --output build/npu.v

# The FPGA tools (YoWASP yosys and nextpnr, amaranth-boards) on top of the dev install.
$(FPGA_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,fpga]'
	@touch $@

# Out-of-context synthesis of one component: make synth COMPONENT=requantizer [PNR=1]
synth: $(FPGA_STAMP)
	$(PY) -m hw.fpga $(COMPONENT) --config "$(CONFIG)" $(if $(PNR),--pnr)

# A board's bitstream and build/<board>/report.md:
# make bitstream BOARD=ulx3s|icebreaker [CONFIG=rows=4,cols=4] [FREQ=40] [LINK=serial]
BOARD    ?= ulx3s
FREQ     ?=
LINK     ?= self-test
bitstream: $(FPGA_STAMP)
	$(PY) -m boards $(BOARD) $(if $(CONFIG),--config "$(CONFIG)") $(if $(FREQ),--freq $(FREQ)) --link $(LINK)

lint: $(STAMP)
	$(PY) -m ruff check hw sim driver boards tests examples bench
	$(VENV)/bin/lint-imports

# The benchmark's extra (SCALE-Sim) on top of the dev install, once per pyproject change.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP) iverilog-installed cxx-installed
	$(PY) -m bench --output build/bench

# Place and route of every board build (about an hour): build/bench/fpga.md, and the FPGA
# section of build/bench/report.md.
bench-fpga: $(FPGA_STAMP)
	$(PY) -m bench.fpga --output build/bench

clean:
	rm -rf build sim_build .pytest_cache

distclean: clean
	rm -rf $(VENV)
