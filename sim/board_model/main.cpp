// Board model: the link SoC built by Verilator, its UART pins bridged to a TCP socket bit by bit.
//
// Usage: Vboard PORT        (PORT 0: the kernel picks one)
//
// Prints "LISTENING <port>" on stdout once the socket listens, accepts one client, and then:
//   * bytes from the client are shifted into the SoC's rx pin as 8N1 frames, BIT_CLOCKS cycles
//     per bit (the real UART receiver samples them);
//   * the SoC's tx pin is sampled at the centre of each bit; each complete byte goes to the client
//     (a low stop bit is reported on stderr and the byte dropped, as a real UART would).
// The clock only runs while something is in flight: a byte on either line, or the SoC's busy
// output. When all is quiet the model waits on the socket without ticking, so the cycle count is
// the time the board would need with a host that answers instantly.
// It exits when the client disconnects, on SIGTERM/SIGINT, and prints the cycle count on stderr.

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "Vboard.h"
#include "verilated.h"

#ifndef BIT_CLOCKS
#error "BIT_CLOCKS (clock cycles per UART bit) must be defined"
#endif

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

namespace {

// Host -> board: shifts bytes onto the rx pin.
struct LineSender {
    std::deque<uint8_t> queue;
    int bit = -1;          // -1 idle, 0 start, 1..8 data, 9 stop
    int count = 0;
    uint8_t byte = 0;

    bool idle() const { return bit < 0 && queue.empty(); }

    // Level of the line for the coming cycle.
    int step() {
        if (bit < 0) {
            if (queue.empty()) return 1;
            byte = queue.front();
            queue.pop_front();
            bit = 0;
            count = 0;
        }
        int level = bit == 0 ? 0 : bit <= 8 ? (byte >> (bit - 1)) & 1 : 1;
        if (++count == BIT_CLOCKS) {
            count = 0;
            if (++bit == 10) bit = -1;
        }
        return level;
    }
};

// Board -> host: samples the tx pin at bit centres.
struct LineReceiver {
    int bit = -1;
    int count = 0;
    unsigned shreg = 0;
    uint64_t framing_errors = 0;

    bool idle() const { return bit < 0; }

    // Feed the pin level after a clock edge; returns a byte (0..255) or -1.
    int step(int level) {
        if (bit < 0) {
            if (level == 0) {
                bit = 0;
                count = 0;
            }
            return -1;
        }
        ++count;
        // The start edge was seen on cycle 0 of the bit; its centre is BIT_CLOCKS/2 later.
        if (count == (bit == 0 ? BIT_CLOCKS / 2 : BIT_CLOCKS)) {
            count = 0;
            if (bit == 0) {
                if (level != 0) { bit = -1; return -1; }  // glitch
            } else if (bit <= 8) {
                shreg = (shreg >> 1) | (unsigned(level) << 7);
            } else {
                bit = -1;
                if (level == 1) return int(shreg & 0xFF);
                ++framing_errors;
                return -1;
            }
            ++bit;
        }
        return -1;
    }
};

bool send_all(int fd, std::vector<uint8_t>& buf) {
    size_t off = 0;
    while (off < buf.size()) {
        ssize_t n = send(fd, buf.data() + off, buf.size() - off, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                pollfd p{fd, POLLOUT, 0};
                poll(&p, 1, 100);
                if (g_stop) return false;
                continue;
            }
            return false;
        }
        off += size_t(n);
    }
    buf.clear();
    return true;
}

// Returns false when the client closed the connection or the socket failed.
bool receive(int fd, std::deque<uint8_t>& queue) {
    uint8_t tmp[65536];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            queue.insert(queue.end(), tmp, tmp + n);
            if (size_t(n) < sizeof tmp) return true;
            continue;
        }
        if (n == 0) return false;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = std::atoi(argv[1]);
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(ls, 1) != 0) {
        std::perror("board model: bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len);
    std::printf("LISTENING %d\n", ntohs(addr.sin_port));
    std::fflush(stdout);

    int fd = -1;
    while (!g_stop && fd < 0) {
        pollfd p{ls, POLLIN, 0};
        if (poll(&p, 1, 200) > 0) fd = accept(ls, nullptr, nullptr);
    }
    close(ls);
    if (fd < 0) return 0;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vboard>(ctx.get());

    uint64_t cycles = 0;
    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        ++cycles;
    };
    top->rx = 1;
    top->rst = 1;
    for (int i = 0; i < 4; ++i) tick();
    top->rst = 0;
    tick();

    LineSender sender;
    LineReceiver receiver;
    std::vector<uint8_t> out;
    bool open = true;
    uint64_t last_flush = cycles;

    while (!g_stop && open) {
        bool quiet = sender.idle() && receiver.idle() && !top->busy && top->tx;
        if (quiet) {
            if (!out.empty() && !send_all(fd, out)) break;
            pollfd p{fd, POLLIN, 0};
            int r = poll(&p, 1, 200);
            if (r > 0) open = receive(fd, sender.queue);
            continue;
        }
        if (sender.queue.empty() && (cycles & 255) == 0) open = receive(fd, sender.queue);
        top->rx = sender.step();
        tick();
        int byte = receiver.step(top->tx);
        if (byte >= 0) out.push_back(uint8_t(byte));
        if (!out.empty() && (out.size() >= 4096 || cycles - last_flush >= 20 * BIT_CLOCKS * 10)) {
            if (!send_all(fd, out)) break;
            last_flush = cycles;
        }
    }
    if (open && !out.empty()) send_all(fd, out);
    top->final();
    close(fd);
    std::fprintf(stderr, "board model: %llu cycles, %llu tx framing errors%s\n",
                 (unsigned long long)cycles, (unsigned long long)receiver.framing_errors,
                 g_stop ? ", stopped by signal" : "");
    return 0;
}
