"""``kfstudio assemble``'s cost table as the user reads it, line for line, for figures chosen here:
with and without a teacher, fused or not, timed in the file's runtime or not, a teacher that could
not be timed there, an int8 file beside its float one. (The figures measured on a real network are
checked against the files in test_assemble_costs.py; this pins the words, the columns and the
sentences that say where and how each latency was taken.)"""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

from kfstudio.assembly.measure import CostReport, LatencyComparison
from kfstudio.cli.assemble_cmd import print_costs
from kfstudio.core.measures.cost import Cost

NETWORK = SimpleNamespace(tasks=[SimpleNamespace(name="0", title="digit 0"), SimpleNamespace(name="7", title="digit 7")])
PARTS = {"common": Cost(18_152, 152_064, 0.2), "bricks": {"0": Cost(5_190, 39_712, 0.19), "7": Cost(5_190, 39_712, 0.25)}}
FORM = "both BatchNorm folded, channels_last"


def _printed(costs, runtime=None) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_costs(costs, NETWORK, runtime)
    return out.getvalue()


def _parts_table() -> str:
    return ("\n"
            "part               parameters  multiply-adds     latency\n"
            "common module          18,152        152,064     0.20 ms\n"
            "brick 'digit 0'         5,190         39,712     0.19 ms\n"
            "brick 'digit 7'         5,190         39,712     0.25 ms\n")


def test_beside_the_teacher_fused_and_timed_in_onnxruntime():
    costs = CostReport("cpu", Cost(28_532, 231_488, 0.5), teacher=Cost(288_170, 2_379_008, 0.25), fused=True,
                       unfused_latency_ms=0.75, fused_groups=2, latency_form=FORM, **PARTS)
    runtime = LatencyComparison("onnxruntime", "both exported to ONNX", 1,
                                {"network": {1: 0.05, 64: 1.5}, "teacher": {1: 0.1, 64: 2.0}})
    assert _printed(costs, runtime) == (
        "\n"
        "                                         assembled       teacher  assembled/teacher\n"
        "parameters                                  28,532       288,170                10%\n"
        "multiply-adds / input                      231,488     2,379,008                10%\n"
        "latency, eager torch on cpu, batch 1       0.50 ms       0.25 ms               200%\n"
        "latency brick by brick (not used)          0.75 ms                             300%\n"
        "latency, onnxruntime, batch 1              0.05 ms       0.10 ms                50%\n"
        "latency, onnxruntime, batch 64             1.50 ms       2.00 ms                75%\n"
        "Latency: median ms per call, one thread, the network and the teacher timed in turns, each pair in the "
        "same runtime and form. Eager torch: both BatchNorm folded, channels_last. Onnxruntime: both exported to "
        "ONNX.\n"
        "The network runs fused: bricks of one architecture run as one network of stacked weights (2 fused "
        "groups); exported files run the fused form too.\n" + _parts_table())


def test_without_a_teacher_or_a_runtime_brick_by_brick_and_unknown_figures_show_a_dash():
    costs = CostReport("cuda:0", Cost(28_532, None, None), teacher=None, fused=False, unfused_latency_ms=0.75,
                       fused_groups=0, latency_form=FORM, **PARTS)
    assert _printed(costs) == (
        "\n"
        "                                            assembled       teacher  assembled/teacher\n"
        "parameters                                     28,532             -                  -\n"
        "multiply-adds / input                               -             -                  -\n"
        "latency, eager torch on cuda:0, batch 1             -             -                  -\n"
        "Latency: median ms per call, one thread, the network and the teacher timed in turns, each pair in the "
        "same runtime and form. Eager torch: both BatchNorm folded, channels_last.\n" + _parts_table())


def test_one_fused_group_and_an_unknown_network_latency_beside_a_timed_teacher():
    costs = CostReport("cpu", Cost(28_532, 231_488, None), teacher=Cost(288_170, 2_379_008, 0.25), fused=True,
                       unfused_latency_ms=None, fused_groups=1, latency_form=FORM, **PARTS)
    text = _printed(costs)
    assert "latency brick by brick" not in text
    assert "latency, eager torch on cpu, batch 1             -       0.25 ms                  -\n" in text
    assert ("The network runs fused: bricks of one architecture run as one network of stacked weights (1 fused "
            "group); exported files run the fused form too.\n") in text


def test_a_teacher_that_could_not_be_timed_in_the_files_runtime_is_said():
    costs = CostReport("cpu", Cost(28_532, 231_488, 0.5), teacher=Cost(288_170, 2_379_008, 0.25), fused=False,
                       latency_form=FORM, **PARTS)
    runtime = LatencyComparison("TorchScript", "both traced and frozen", 1, {"network": {1: 0.25}},
                                note="the teacher could not be written as torchscript to time it: no")
    lines = _printed(costs, runtime).splitlines()
    assert "latency, TorchScript, batch 1              0.25 ms             -                  -" in lines
    assert lines[lines.index("latency, TorchScript, batch 1              0.25 ms             -                  -")
                 + 1].endswith("Eager torch: both BatchNorm folded, channels_last. TorchScript: both traced and frozen.")
    assert ("Not timed against the teacher in TorchScript: the teacher could not be written as torchscript to time "
            "it: no.") in lines
    assert not any(line.startswith(("int8", "The network runs fused")) for line in lines)


def test_an_int8_file_says_how_much_faster_it_ran_than_its_float_file():
    costs = CostReport("cpu", Cost(28_532, 231_488, 0.5), teacher=Cost(288_170, 2_379_008, 0.25), fused=False,
                       latency_form=FORM, **PARTS)
    runtime = LatencyComparison("onnxruntime", "int8 ONNX file; teacher exported to float ONNX", 1,
                                {"network": {1: 0.05, 64: 1.0}, "teacher": {1: 0.1, 64: 2.0},
                                 "float network": {1: 0.1, 64: 3.0}})
    lines = _printed(costs, runtime).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Latency: "))
    assert lines[at].endswith(" Onnxruntime: int8 ONNX file; teacher exported to float ONNX.")
    assert lines[at + 1] == ("int8 against the float ONNX file, both in onnxruntime, 1 thread, timed in turns: "
                             "batch 1: 2.00x as fast; batch 64: 3.00x as fast.")
    assert lines[at + 2] == ""  # then the parts
    assert not any(line.startswith("float network") for line in lines)   # the float file is not a row of its own


def test_a_file_that_ran_at_no_batch_size_has_no_runtime_rows():
    """compare_latency drops a run with no figure at any batch size; the table then has no row for it
    (after the export's self-test this is the teacher's case, but the network's is handled alike)."""
    costs = CostReport("cpu", Cost(28_532, 231_488, 0.5), teacher=Cost(288_170, 2_379_008, 0.25), fused=False,
                       latency_form=FORM, **PARTS)
    runtime = LatencyComparison("onnxruntime", "both exported to ONNX", 1, {"teacher": {1: 0.1}})
    text = _printed(costs, runtime)
    assert "latency, onnxruntime" not in text
    assert " Onnxruntime: both exported to ONNX.\n" in text and text.endswith(_parts_table())
