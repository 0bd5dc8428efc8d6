"""Verilator lint waivers for Amaranth-generated Verilog, in one place, each with its reason.

Amaranth emits correct but lint-noisy Verilog; without these Verilator stops on warnings. Every
waiver here is for a pattern the Amaranth back end produces by construction, not for a bug in the
project's gateware. Keep this list short: add a waiver only with the pattern that needs it.
"""

__all__ = ["VERILATOR_WAIVERS", "verilator_lint_args"]

VERILATOR_WAIVERS = {
    # Amaranth widens operands implicitly (Python-like arithmetic) and leaves the extension to the
    # Verilog semantics, so narrower operands appear in wider expressions everywhere.
    "WIDTHEXPAND": "implicit operand widening in Amaranth arithmetic",
    # Amaranth truncates on assignment (.eq to a narrower signal) by the Verilog rules.
    "WIDTHTRUNC": "implicit truncation on assignment to a narrower signal",
    # Switch/case statements from m.Switch may not list every value; the default is explicit or
    # the signal keeps its reset/comb default.
    "CASEINCOMPLETE": "m.Switch without every value covered",
    # m.Case patterns with don't-care bits can overlap; Amaranth gives priority by order.
    "CASEOVERLAP": "prioritised m.Case patterns with wildcards",
    # Comparisons of unsigned values against zero (e.g. x >= 0) produced by range checks.
    "UNSIGNED": "unsigned comparisons against 0 in generated range checks",
    "CMPCONST": "comparisons against constants wider than the operand",
    # Amaranth keeps combinational signals in one flattened always block; Verilator reports the
    # resulting false combinational loops through packed vectors.
    "UNOPTFLAT": "false combinational loop through bits of one packed vector",
    # Memories and part selects in Amaranth output are declared [0:N-1].
    "LITENDIAN": "little-endian ranges on Amaranth memories",
    # Unused bits of intermediate wires (for example the top bits of a product).
    "UNUSEDSIGNAL": "unused intermediate bits",
    "UNDRIVEN": "unused ports of library memories left undriven by design",
}


def verilator_lint_args() -> list[str]:
    """Verilator command-line arguments that apply :data:`VERILATOR_WAIVERS`."""
    return [f"-Wno-{name}" for name in VERILATOR_WAIVERS]
