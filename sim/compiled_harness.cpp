// The host loop of sim/host_loop.py in C++, next to the Verilated Npu (Vnpu).
//
// sim/compiled_harness.py builds this file with the Verilated model into one shared
// library and calls it through the plain C functions at the end (ctypes).  The loop
// mirrors sim/host_loop.py's contract cycle for cycle: see that module's docstring for
// what is driven when, the completion condition and the watchdog; the comments below
// name the contract's steps.
//
// Pause values come from one of three sources per stream:
//   NEVER   never pauses;
//   RANDOM  pauses when the next splitmix64 output is below a threshold (the Python side
//           computes the initial state and the threshold, see compiled_harness.py);
//   HOST    values the Python side hands over in chunks (npu_feed_pauses); when a chunk
//           is used up the run returns NEED_PAUSES and resumes once fed.

#include "Vnpu.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

// Verilator spells a port's double underscore "___05F": commands__valid is
// commands___05Fvalid.

namespace {

constexpr int STREAMS = 3;  // commands, data in, data out (sim.host_loop.STREAMS)
enum PauseMode { NEVER = 0, RANDOM = 1, HOST = 2 };
// RESET: the run reached its reset_after edge and the chip was reset.
enum Outcome { DONE = 0, TIMEOUT = 1, RESET = 2, NEED_PAUSES = 3 };  // NEED_PAUSES + stream

// Ports as little-endian bytes (a beat is the little-endian integer of its bytes, as in
// hw/beats.py): scalar ports up to 64 bits, VlWide ports wider.  Unused upper bits stay 0.
template <typename T>
inline void put(T& port, const std::uint8_t* bytes, std::size_t n) {
    T value = 0;
    std::memcpy(&value, bytes, n);
    port = value;
}
template <std::size_t N>
inline void put(VlWide<N>& port, const std::uint8_t* bytes, std::size_t n) {
    std::memset(port.data(), 0, sizeof(EData) * N);
    std::memcpy(port.data(), bytes, n);
}
template <typename T>
inline void get(const T& port, std::uint8_t* bytes, std::size_t n) {
    T value = port;
    std::memcpy(bytes, &value, n);
}
template <std::size_t N>
inline void get(const VlWide<N>& port, std::uint8_t* bytes, std::size_t n) {
    std::memcpy(bytes, port.data(), n);
}
template <typename T>
inline std::uint64_t value_of(const T& port) { return static_cast<std::uint64_t>(port); }

inline std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct Pauses {
    int mode = NEVER;
    std::uint64_t state = 0, threshold = 0;
    std::vector<std::uint8_t> values;
    std::size_t position = 0;
    bool exhausted = false;

    // A HOST stream whose chunk is used up and whose iterator may have more.
    bool starved() const { return mode == HOST && position == values.size() && !exhausted; }

    bool next() {
        switch (mode) {
        case RANDOM: return splitmix64(state) < threshold;
        case HOST: return position < values.size() && values[position++];
        default: return false;
        }
    }
};

}  // namespace

struct NpuHarness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vnpu> top;
#if VM_TRACE_FST
    std::unique_ptr<VerilatedFstC> trace;
#endif
    std::size_t data_bytes = 0;  // bytes of a data-stream beat (-DNPU_DATA_BYTES)

    // One run's host side (sim.host_loop.HostLoop's attributes).
    std::vector<std::uint64_t> commands;
    std::vector<std::uint8_t> data_in, data_out;
    std::size_t beats_in = 0, commands_taken = 0, data_in_taken = 0, data_out_beats = 0;
    std::uint64_t target = 0, mask = 0, idle_cycles = 0, max_idle_cycles = 0, edges = 0;
    std::uint64_t reset_after = 0;  // 0: never; else reset the chip after this many edges
    bool needs_status = false, started = false;
    // Whether an input changed since the last eval() with the clock low (the model skips
    // its input logic otherwise; see compiled_harness.py).
    bool inputs_changed = true;
    int commands_valid = 0, data_in_valid = 0, data_out_ready = 0;
    int reset_edges = 3;
    Pauses pauses[STREAMS];

    void dump() {
#if VM_TRACE_FST
        if (trace) trace->dump(context->time());
#endif
    }

    // Half a clock period low (inputs settle), then the rising edge.  The values the
    // flip-flops see at the edge are the ones settled before it.
    void low() {
        top->clk = 0;
        top->harness_inputs_changed = inputs_changed;
        top->eval();
        inputs_changed = false;
        dump();
        context->timeInc(5);
    }
    void high() {
        top->clk = 1;
        top->eval();
        dump();
        context->timeInc(5);
    }

    // An input written with a new value: the next eval() settles the logic it feeds.
    template <typename T>
    void set(T& port, int value) {
        if (port != value) {
            port = value;
            inputs_changed = true;
        }
    }

    void drive() {
        set(top->commands___05Fvalid, commands_valid);
        set(top->data_in___05Fvalid, data_in_valid);
        set(top->data_out___05Fready, data_out_ready);
    }

    // Contract step 4: each pause iterator advances once, commands, data in, data out.
    void next_cycle() {
        bool pause = pauses[0].next();
        if (!commands_valid && !pause && commands_taken < commands.size()) {
            top->commands___05Fpayload = commands[commands_taken];
            commands_valid = 1;
            inputs_changed = true;
        }
        pause = pauses[1].next();
        if (!data_in_valid && !pause && data_in_taken < beats_in) {
            put(top->data_in___05Fpayload, &data_in[data_in_taken * data_bytes], data_bytes);
            data_in_valid = 1;
            inputs_changed = true;
        }
        data_out_ready = pauses[2].next() ? 0 : 1;
        drive();
    }

    void stop() {
        commands_valid = data_in_valid = data_out_ready = 0;
        drive();
    }

    // The reset of sim/host_loop.py's contract: every stream idle, rst high for `edges`
    // rising edges, then low for one.  The top's rst reaches the chip through the
    // wrapper's flip-flop, one edge later, so rst is driven from one edge earlier.
    void reset_chip(int edges) {
        stop();
        for (int edge = 0; edge < edges + 2; ++edge) {
            set(top->rst, edge < edges);
            low();
            high();
        }
    }

    int resume() {
        Vnpu& chip = *top;
        for (;;) {
            if (!started) {
                // The constructor's values (cycle 0) and each cycle's: pause values first.
                for (int stream = 0; stream < STREAMS; ++stream)
                    if (pauses[stream].starved()) return NEED_PAUSES + stream;
                next_cycle();
                started = true;
            }
            low();
            // Sample what the chip shows just before the edge.
            const bool commands_ready = chip.commands___05Fready;
            const bool data_in_ready = chip.data_in___05Fready;
            const bool out_valid = chip.data_out___05Fvalid;
            const bool status_idle = !chip.busy;
            const std::uint64_t executed = value_of(chip.executed);
            if (out_valid && data_out_ready) {
                data_out.resize((data_out_beats + 1) * data_bytes);
                get(chip.data_out___05Fpayload, &data_out[data_out_beats * data_bytes],
                    data_bytes);
            }
            high();
            ++edges;
            // 1. Transfers.
            bool progressed = false;
            if (commands_valid && commands_ready) {
                commands_valid = 0;
                ++commands_taken;
                progressed = true;
            }
            if (data_in_valid && data_in_ready) {
                data_in_valid = 0;
                ++data_in_taken;
                progressed = true;
            }
            if (data_out_ready && out_valid) {
                ++data_out_beats;
                progressed = true;
            }
            // 2. Completion.
            if (needs_status && executed == target && status_idle && !out_valid) {
                stop();
                return DONE;
            }
            // A reset at a chosen edge (not part of the contract: for fuzzing).
            if (reset_after && edges == reset_after) {
                reset_chip(reset_edges);
                return RESET;
            }
            // 3. Watchdog.
            if (progressed) {
                idle_cycles = 0;
            } else if (++idle_cycles > max_idle_cycles) {
                stop();
                return TIMEOUT;
            }
            needs_status = commands_taken == commands.size();
            // 4. Next cycle (after the pause values it needs, which may come from Python).
            started = false;
        }
    }
};

// Only these functions leave the library (it is compiled with -fvisibility=hidden).
#define NPU_API __attribute__((visibility("default")))

extern "C" {

// A chip, reset, with every stream idle; trace_path (or NULL) names an FST waveform.
NPU_API NpuHarness* npu_open(const char* trace_path) {
    auto* h = new NpuHarness;
    h->context = std::make_unique<VerilatedContext>();
    h->data_bytes = NPU_DATA_BYTES;
#if VM_TRACE_FST
    if (trace_path && *trace_path) h->context->traceEverOn(true);
#endif
    h->top = std::make_unique<Vnpu>(h->context.get(), "npu");
#if VM_TRACE_FST
    if (trace_path && *trace_path) {
        h->trace = std::make_unique<VerilatedFstC>();
        h->top->trace(h->trace.get(), 99);
        h->trace->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    // The chip sees the reset of sim/cocotb_harness.py, high for three rising edges, then
    // low for one more; the top's rst reaches the chip through a flip-flop that starts
    // high (compiled_harness.py's wrapper), so it is raised for two edges, then lowered.
    h->stop();
    for (int edge = 0; edge < 4; ++edge) {
        h->set(h->top->rst, edge < 2);
        h->low();
        h->high();
    }
    return h;
}

NPU_API void npu_close(NpuHarness* h) {
    if (!h) return;
    h->top->final();
#if VM_TRACE_FST
    if (h->trace) h->trace->close();
#endif
    delete h;
}

NPU_API std::size_t npu_data_bytes(void) { return NPU_DATA_BYTES; }

// The chip's counters now: executed, cycles, array_cycles, error, error_opcode.
NPU_API void npu_counters(NpuHarness* h, std::uint64_t* out) {
    out[0] = value_of(h->top->executed);
    out[1] = value_of(h->top->cycles);
    out[2] = value_of(h->top->array_cycles);
    out[3] = value_of(h->top->error);
    out[4] = value_of(h->top->error_opcode);
}

// Reset the chip between runs: rst high for `edges` rising edges, every stream idle.
NPU_API void npu_reset(NpuHarness* h, int edges) {
    h->reset_edges = edges;
    h->reset_chip(edges);
}

// Start a run: the buffers are copied; pauses are set with npu_pauses afterwards.  A
// non-zero reset_after resets the chip (reset_edges edges) once the run has taken that
// many edges without finishing.
NPU_API void npu_start(NpuHarness* h, const std::uint64_t* commands, std::size_t n_commands,
               const std::uint8_t* data_in, std::size_t n_beats, std::uint64_t target,
               std::uint64_t max_idle_cycles, std::uint64_t reset_after, int reset_edges) {
    h->reset_after = reset_after;
    h->reset_edges = reset_edges;
    h->commands.assign(commands, commands + n_commands);
    h->data_in.assign(data_in, data_in + n_beats * h->data_bytes);
    h->beats_in = n_beats;
    h->data_out.clear();
    h->commands_taken = h->data_in_taken = h->data_out_beats = 0;
    h->target = target;
    h->max_idle_cycles = max_idle_cycles;
    h->idle_cycles = h->edges = 0;
    h->needs_status = n_commands == 0;
    h->commands_valid = h->data_in_valid = h->data_out_ready = 0;
    h->started = false;
    for (auto& p : h->pauses) p = Pauses();
}

// Stream `stream`'s pause source: NEVER, RANDOM (state, threshold) or HOST.
NPU_API void npu_pauses(NpuHarness* h, int stream, int mode, std::uint64_t state,
                std::uint64_t threshold) {
    Pauses& p = h->pauses[stream];
    p = Pauses();
    p.mode = mode;
    p.state = state;
    p.threshold = threshold;
}

// The next chunk of a HOST stream's values; `exhausted`: the iterator has no more.
NPU_API void npu_feed_pauses(NpuHarness* h, int stream, const std::uint8_t* values, std::size_t n,
                     int exhausted) {
    Pauses& p = h->pauses[stream];
    p.values.assign(values, values + n);
    p.position = 0;
    p.exhausted = exhausted != 0;
}

// Run until done (0), the watchdog trips (1), the run's reset_after edge resets the chip
// (2) or a HOST stream needs values (3 + stream).
NPU_API int npu_resume(NpuHarness* h) { return h->resume(); }

// The run's progress: commands taken, data-in beats taken, data-out beats, idle cycles,
// edges.
NPU_API void npu_progress(NpuHarness* h, std::uint64_t* out) {
    out[0] = h->commands_taken;
    out[1] = h->data_in_taken;
    out[2] = h->data_out_beats;
    out[3] = h->idle_cycles;
    out[4] = h->edges;
}

// Copy the run's data-out bytes (data_out_beats * data bytes) to `out`.
NPU_API void npu_data_out(NpuHarness* h, std::uint8_t* out) {
    if (!h->data_out.empty()) std::memcpy(out, h->data_out.data(), h->data_out.size());
}

}  // extern "C"
