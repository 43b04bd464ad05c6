// The simulated board: the Verilated LinkedChip (SerialLink + Npu) with its UART pins
// bridged to a TCP socket, byte for byte.
//
// sim/serial_harness.py builds this file with the model into one shared library and
// calls the plain C functions at the end (ctypes).  A host connects to the listening
// socket (pyserial's socket://127.0.0.1:port) and every byte it sends is driven onto the
// chip's rx pin as 8N1 at `divisor` clock cycles per bit, back to back as a USB UART
// sends them; the chip's tx pin is sampled in the middle of each bit and every byte it
// sends goes back on the socket.  The clock runs only while something happens: once
// the link says it is idle (its `idle` pin), the rx line has nothing to send and the tx
// line has been high for more than a byte's time, the loop waits for the host without
// running the clock.  So the simulated time is the time of a host that answers at once.

#include "Vlinked.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr int BITS = 10;            // start, 8 data, stop
constexpr std::uint64_t PUMP = 64;  // cycles between looks at the socket while running

}  // namespace

struct SerialHarness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vlinked> top;
    int divisor = 4;
    int listen_fd = -1, client_fd = -1;
    std::atomic<int> stop{0};

    // Host to chip: bytes waiting, and the one on the line.
    std::deque<std::uint8_t> rx_queue;
    int rx_bit = -1;                // bit of the byte on the line, -1: line idle
    int rx_timer = 0;
    std::uint16_t rx_frame = 0;     // start, data, stop bits, least significant first
    // Chip to host: the decoder of the tx pin.
    int tx_bit = -1;                // -1: waiting for a start bit
    int tx_timer = 0;
    std::uint16_t tx_shift = 0;
    std::uint64_t tx_high = 0;      // cycles the tx line has been high
    std::vector<std::uint8_t> tx_out;

    std::uint64_t cycles = 0, bytes_in = 0, bytes_out = 0, waits = 0, framing = 0;

    void edge() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        ++cycles;
    }

    void drive_rx() {
        if (rx_bit < 0) {
            if (rx_queue.empty()) {
                top->rx = 1;
                return;
            }
            rx_frame = static_cast<std::uint16_t>((rx_queue.front() << 1) | (1u << 9));
            rx_queue.pop_front();
            rx_bit = 0;
            rx_timer = 0;
        }
        top->rx = (rx_frame >> rx_bit) & 1;
        if (++rx_timer == divisor) {
            rx_timer = 0;
            if (++rx_bit == BITS) rx_bit = -1;
        }
    }

    void sample_tx() {
        const int line = top->tx;
        tx_high = line ? tx_high + 1 : 0;
        if (tx_bit < 0) {
            if (!line) {
                tx_bit = 0;
                tx_timer = divisor / 2;   // to the middle of the start bit
            }
            return;
        }
        if (--tx_timer > 0) return;
        tx_timer = divisor;
        if (tx_bit == 0) {
            if (line) tx_bit = -1;        // a glitch
            else tx_bit = 1;
            return;
        }
        if (tx_bit <= 8) {
            tx_shift = static_cast<std::uint16_t>((tx_shift >> 1) | (line << 7));
            ++tx_bit;
            return;
        }
        if (line) {
            tx_out.push_back(static_cast<std::uint8_t>(tx_shift & 0xFF));
            ++bytes_out;
        } else {
            ++framing;
        }
        tx_bit = -1;
    }

    // Send what the chip sent; take what the host sent.  Returns false once the host
    // has gone (or the socket failed).
    bool pump(int timeout_ms) {
        if (client_fd < 0) return false;
        if (!tx_out.empty()) {
            std::size_t done = 0;
            while (done < tx_out.size()) {
                ssize_t n = send(client_fd, tx_out.data() + done, tx_out.size() - done,
                                 MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    return false;
                }
                done += static_cast<std::size_t>(n);
            }
            tx_out.clear();
        }
        pollfd p{client_fd, POLLIN, 0};
        int ready = poll(&p, 1, timeout_ms);
        if (ready < 0) return errno == EINTR;
        if (ready == 0) return true;
        std::uint8_t buffer[4096];
        ssize_t n = recv(client_fd, buffer, sizeof buffer, 0);
        if (n <= 0) return false;
        rx_queue.insert(rx_queue.end(), buffer, buffer + n);
        bytes_in += static_cast<std::uint64_t>(n);
        return true;
    }

    bool quiet() const {
        return top->idle && rx_bit < 0 && rx_queue.empty() && tx_bit < 0
               && tx_high > static_cast<std::uint64_t>((BITS + 2) * divisor);
    }

    // Serve one host until it disconnects or stop is set: 0 the host left, 1 stopped,
    // -1 the socket failed.
    int serve() {
        while (!stop.load()) {
            pollfd p{listen_fd, POLLIN, 0};
            int ready = poll(&p, 1, 100);
            if (ready < 0 && errno != EINTR) return -1;
            if (ready > 0) break;
        }
        if (stop.load()) return 1;
        client_fd = accept(listen_fd, nullptr, nullptr);
        if (client_fd < 0) return -1;
        int one = 1;
        setsockopt(client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rx_queue.clear();
        int outcome = 0;
        std::uint64_t since_pump = 0;
        while (!stop.load()) {
            if (quiet()) {
                ++waits;
                if (!pump(50)) break;
                continue;
            }
            if (++since_pump >= PUMP) {
                since_pump = 0;
                if (!pump(0)) break;
            }
            drive_rx();
            edge();
            sample_tx();
        }
        if (stop.load()) outcome = 1;
        close(client_fd);
        client_fd = -1;
        tx_out.clear();
        return outcome;
    }
};

#define NPU_API __attribute__((visibility("default")))

extern "C" {

// A chip out of reset with its link, listening on 127.0.0.1:port (0: any free port).
NPU_API SerialHarness* serial_open(int divisor, int port) {
    auto* h = new SerialHarness;
    h->divisor = divisor;
    h->context = std::make_unique<VerilatedContext>();
    h->top = std::make_unique<Vlinked>(h->context.get(), "linked");
    h->top->rx = 1;
    for (int edge = 0; edge < 4; ++edge) {
        h->top->rst = edge < 2;
        h->edge();
    }
    h->cycles = 0;
    h->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (h->listen_fd < 0) {
        delete h;
        return nullptr;
    }
    int one = 1;
    setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    if (bind(h->listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0
        || listen(h->listen_fd, 1) < 0) {
        close(h->listen_fd);
        delete h;
        return nullptr;
    }
    return h;
}

// The port it listens on.
NPU_API int serial_port(SerialHarness* h) {
    sockaddr_in address{};
    socklen_t size = sizeof address;
    if (getsockname(h->listen_fd, reinterpret_cast<sockaddr*>(&address), &size) < 0) return -1;
    return ntohs(address.sin_port);
}

// Serve hosts one after the other until serial_stop: returns 1 when stopped, -1 when the
// socket failed.  (Call from a thread of its own; ctypes lets go of the GIL.)
NPU_API int serial_serve(SerialHarness* h) {
    for (;;) {
        int outcome = h->serve();
        if (outcome != 0) return outcome;
    }
}

NPU_API void serial_stop(SerialHarness* h) { h->stop.store(1); }

// cycles run, bytes from the host, bytes to the host, waits for the host, tx framing
// errors of the decoder.
NPU_API void serial_stats(SerialHarness* h, std::uint64_t* out) {
    out[0] = h->cycles;
    out[1] = h->bytes_in;
    out[2] = h->bytes_out;
    out[3] = h->waits;
    out[4] = h->framing;
}

NPU_API void serial_close(SerialHarness* h) {
    if (!h) return;
    h->top->final();
    if (h->listen_fd >= 0) close(h->listen_fd);
    delete h;
}

}  // extern "C"
