"""Upload throughput of the host link, measured on the board model.

Uploads random data with the host client (``sw.client``) to the board model (``sim.board``), reads
the SoC's own cycle counter (STATUS) before and after, and reports:

* measured: modelled clock cycles for the upload, the model's bit period (cycles per bit) and the
  resulting protocol efficiency = payload bytes / byte slots of the 8N1 line in that time
  (1.0 = the 300 kB/s an 8N1 line carries at 3 Mbaud; 8N1 framing itself is outside this figure,
  and payload bits / line bits is at most 0.8 for any 8N1 link);
* both for stop-and-wait (one frame in flight) and for the client's default of two;
* derived: the same upload on the ULX3S build (75 MHz, 25 cycles per bit): line time scaled to
  25 cycles per bit, the SoC's processing cycles (parsing, the frame-buffer copy) kept as counted;
* not included: the host's turnaround (USB latency). The model stops its clock while it waits for
  the host, so the figure is the board's side of the link.

Usage: ``python bench/link_throughput.py [--bytes N] [--chunk N] [--out bench/results/link.json]``
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.board import MODEL_BAUD, MODEL_CLK_FREQ, BoardModel  # noqa: E402
from sw import protocol as P  # noqa: E402
from sw.client import Client  # noqa: E402

BOARD_CLK = 75_000_000
BOARD_BAUD = 3_000_000


def measure(nbytes: int, chunk: int | None, window: int, seed: int = 1) -> dict:
    data = random.Random(seed).randbytes(nbytes)
    div = MODEL_CLK_FREQ // MODEL_BAUD
    with BoardModel() as url, Client.open(url, timeout=5.0) as c:
        m = c.hello()
        s0 = c.status()
        sent0, recv0 = c.bytes_sent, c.bytes_received
        t0 = time.monotonic()
        c.write(0, 0, data, chunk=chunk, window=window)
        wall = time.monotonic() - t0
        s1 = c.status()
        line_bytes = (c.bytes_sent - sent0) + (c.bytes_received - recv0)
        c.verify(0, 0, data)
        retrans = c.retransmissions
    cycles = s1.cycles - s0.cycles
    slots = cycles / (10 * div)
    # Only stop-and-wait splits cleanly into line time + processing; with two frames in flight
    # the processing overlaps the next frame's transfer, so the split is not defined there.
    processing = cycles - line_bytes * 10 * div if window == 1 else None
    board_cycles = (line_bytes * 10 * (BOARD_CLK // BOARD_BAUD) + processing if window == 1 else None)
    board_slots = board_cycles / (10 * (BOARD_CLK // BOARD_BAUD)) if window == 1 else None
    frame = chunk or m.max_data
    return {
        "what": "upload (WRITE frames) of random data to the test memory",
        "frames_in_flight": window,
        "payload_bytes": nbytes,
        "data_per_frame": frame,
        "request_overhead_bytes": P.OVERHEAD + P.ARG_BYTES,
        "reply_bytes_per_frame": P.OVERHEAD,
        "measured": {
            "source": "board model: link SoC under Verilator, UART pins driven bit by bit",
            "clk_hz": MODEL_CLK_FREQ, "baud": MODEL_BAUD, "cycles_per_bit": div,
            "cycles": cycles,
            "line_bytes_both_directions": line_bytes,
            "processing_cycles": processing,
            "protocol_efficiency": round(nbytes / slots, 4),
            "payload_bits_per_line_bit": round(nbytes * 8 / (cycles / div), 4),
            "retransmissions": retrans,
            "wall_seconds": round(wall, 2),
            "model_cycles_per_second": round(cycles / wall) if wall else None,
        },
        "derived_ulx3s": {
            "how": "line time at 25 cycles/bit (75 MHz, 3 Mbaud) + the processing cycles counted above;"
                   " host USB turnaround not included",
            "clk_hz": BOARD_CLK, "baud": BOARD_BAUD,
            "cycles": board_cycles,
            "protocol_efficiency": round(nbytes / board_slots, 4) if board_slots else None,
            "payload_kB_per_s": round(nbytes / (board_cycles / BOARD_CLK) / 1000, 1) if board_cycles else None,
        },
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=65536)
    ap.add_argument("--chunk", type=int, default=None, help="data bytes per frame (default: max)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "link.json"))
    args = ap.parse_args(argv)
    results = []
    for window in (1, 2):
        result = measure(args.bytes, args.chunk, window)
        results.append(result)
        meas, der = result["measured"], result["derived_ulx3s"]
        print(f"uploaded {args.bytes} bytes in {result['data_per_frame']}-byte frames, {window} in flight: "
              f"{meas['cycles']} modelled cycles at {meas['cycles_per_bit']} cycles/bit")
        print(f"  measured protocol efficiency (payload bytes / 8N1 byte slots): "
              f"{meas['protocol_efficiency']:.1%}  (payload bits / line bits "
              f"{meas['payload_bits_per_line_bit']:.1%}, 8N1 bound 80%)")
        if der["protocol_efficiency"] is not None:
            print(f"  derived for the ULX3S (75 MHz, 3 Mbaud): {der['protocol_efficiency']:.1%}, "
                  f"{der['payload_kB_per_s']} kB/s (host turnaround excluded)")
        print(f"  retransmissions {meas['retransmissions']}, wall {meas['wall_seconds']} s, "
              f"model {meas['model_cycles_per_second']} cycles/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
