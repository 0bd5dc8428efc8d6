import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    # Everything under tests/sim/ is a cycle-accurate cocotb + Verilator run: `make sim` selects
    # them with -m sim.
    sim_dir = ROOT / "tests" / "sim"
    for item in items:
        if sim_dir in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.sim)


@pytest.fixture
def torch_single_thread():
    """Run a test with one torch thread: the tensors of unit tests are tiny, and on a busy
    machine thread hand-offs cost more than the work."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
