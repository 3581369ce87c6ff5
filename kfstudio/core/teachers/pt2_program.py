"""Check the program JSON of a torch.export ``.pt2`` against an allow-list before torch reads it.

torch turns parts of ``models/*.json`` into Python while loading a program:

* every ``expr_str`` (symbolic sizes and their hints) goes through ``sympy.sympify``, which
  evaluates its text (``GraphModuleDeserializer._parse_sym_expr`` in
  ``torch/_export/serde/serialize.py``), during ``torch.export.load``;
* ``guards_code`` is pasted into Python source that ``ExportedProgram.module()`` compiles with
  ``exec`` and the module runs on every call (``_convert_guards_code_to_fn`` in
  ``torch/export/_unlift.py``); so are the paths into the sample inputs (dict keys);
* node ``target`` strings are resolved by walking attributes from ``torch``, ``operator`` and
  ``math`` (``deserialize_operator``), so any callable reachable from there could be called;
* names (nodes, placeholders, arguments, ``forward_arg_names``, parameter paths) and string
  constants end up in the Python source FX generates for the module, and in the guards.

So every string in the program must have one of a few known, inert shapes: expressions are read
by our own small grammar (integers, the size symbols the program declares, + - * // %,
comparisons and the sympy functions torch writes, such as ``Symbol``, ``Mul``, ``FloorDiv``),
guards code must be empty, node targets come from a list of tensor operators, names are plain
identifiers. Anything else is refused with a sentence that names what was found.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kfstudio.core.teachers.pt2_expressions import SYMBOL_NAME, ProgramRefused, quoted, check_expression

__all__ = ["ProgramRefused", "check_expression", "check_program", "check_sample_inputs", "check_target"]


# ---------------------------------------------------------------- node targets

# Tensor operators: pure arithmetic on tensors, nothing that reads or writes files or memory
# outside the tensors. Our own exports use conv2d, batch_norm, relu(_), linear, mean, flatten,
# cat, split_with_sizes, argmax, index, contiguous, adaptive_avg_pool2d and detach; the rest are
# common in the networks people bring as teachers.
ATEN_OPS = frozenset("""
    conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d conv_transpose3d
    linear addmm mm bmm matmul t baddbmm addmv mv dot einsum
    batch_norm _native_batch_norm_legit_no_training _native_batch_norm_legit_functional native_batch_norm
    layer_norm native_layer_norm group_norm native_group_norm instance_norm
    relu relu_ relu6 gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ hardswish hardswish_
    hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ softplus mish mish_ prelu _prelu_kernel
    clamp clamp_ clamp_min clamp_max
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices avg_pool1d avg_pool2d avg_pool3d
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d adaptive_max_pool2d
    upsample_nearest2d upsample_bilinear2d _upsample_nearest_exact2d pixel_shuffle pixel_unshuffle
    flatten view reshape _unsafe_view permute transpose contiguous squeeze unsqueeze expand expand_as clone
    detach alias slice select split split_with_sizes chunk cat stack index index_select gather unbind narrow
    repeat flip roll pad constant_pad_nd _to_copy to type_as lift_fresh_copy
    sym_size sym_stride sym_numel sym_storage_offset
    mean sum amax amin max min argmax argmin softmax _softmax log_softmax _log_softmax logsumexp norm
    linalg_vector_norm var std var_mean cumsum prod all any
    add add_ sub sub_ rsub mul mul_ div div_ neg exp log log2 sqrt rsqrt pow abs where sign reciprocal erf
    eq ne lt le gt ge minimum maximum floor ceil round trunc logical_not logical_and logical_or bitwise_not
    masked_fill fill zeros_like ones_like full_like zeros ones full arange new_zeros new_ones new_full
    scalar_tensor dropout native_dropout feature_dropout alpha_dropout embedding one_hot topk sort
    scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu
    _assert_tensor_metadata _assert_scalar sym_constrain_range_for_size item _local_scalar_dense
""".split())
# Python operators and torch's size helpers, called on sizes (SymInts) in programs with dynamic shapes.
_PLAIN_CALLABLES = frozenset(
    [f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "floordiv", "mod", "neg", "pos", "eq", "ne",
                                "lt", "le", "gt", "ge", "and_", "or_", "not_", "truediv", "abs")]
    + [f"torch.{n}" for n in ("sym_max", "sym_min", "sym_not", "sym_int", "sym_float")]
    + [f"math.{n}" for n in ("ceil", "floor", "trunc")]
)
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")


def check_target(target: Any) -> None:
    if isinstance(target, str):
        match = _ATEN_TARGET.fullmatch(target)
        if (match and match.group(1) in ATEN_OPS) or target in _PLAIN_CALLABLES:
            return
        raise ProgramRefused(f"it calls {quoted(target)}, which is not one of the tensor operators KF Studio "
                             "knows to be plain arithmetic")
    raise ProgramRefused("a node in it names no operator")


# ---------------------------------------------------------------- every string in the program

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
DOTTED = re.compile(r"(?:[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,63})?")  # a module path; "" is the root
PLAIN = re.compile(r"[A-Za-z0-9_.+\-]{0,100}")  # a device type, a verifier, a version
# Constant strings handed to operators (gelu's approximate='tanh', div's rounding_mode='floor'):
# printable, and no quote or backslash, since torch pastes some of them into generated source.
LITERAL = re.compile(r"[ !#-&(-\[\]-~]{0,200}")
# Free text kept as metadata (stack traces, module paths): no carriage returns or other control
# characters that Python could read as the end of a comment in generated source.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")
MAX_TEXT = 100_000
NODE_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn"})

# Pytree containers a program's inputs and outputs may be made of (``in_spec``/``out_spec``).
SPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict",
                        "torch.fx.immutable_collections.immutable_list",
                        "torch.fx.immutable_collections.immutable_dict"})

# What each text field may hold, by its name in the schema (torch/_export/serde/schema.py).
_STRING_FIELDS: dict[str, tuple[re.Pattern, str]] = {
    "name": (IDENTIFIER, "name"), "as_name": (IDENTIFIER, "name"), "user_input_name": (IDENTIFIER, "name"),
    "forward_arg_names": (IDENTIFIER, "argument name"), "field_names": (IDENTIFIER, "field name"),
    "parameter_name": (DOTTED, "parameter name"), "buffer_name": (DOTTED, "buffer name"),
    "tensor_constant_name": (DOTTED, "constant name"), "fqn": (DOTTED, "module path"),
    "type": (PLAIN, "device"), "verifiers": (PLAIN, "verifier"), "torch_version": (PLAIN, "version"),
    "as_string": (LITERAL, "constant"), "as_strings": (LITERAL, "constant"),
}
# Tables whose keys are data rather than schema fields, and what the keys may be.
_KEYED_TABLES: dict[str, re.Pattern] = {
    "tensor_values": IDENTIFIER, "sym_int_values": IDENTIFIER, "sym_bool_values": IDENTIFIER,
    "sym_float_values": IDENTIFIER, "opset_version": IDENTIFIER, "range_constraints": SYMBOL_NAME,
    "treespec_namedtuple_fields": DOTTED, "as_string_to_argument": IDENTIFIER,
}
# Fields that carry Python objects or subprograms: never in a program of plain tensor operators.
_REFUSED_FIELDS = {
    "as_graph": "a subgraph (a higher-order operator)", "as_operator": "an operator passed as an argument",
    "as_custom_obj": "a custom Python object", "custom_obj": "a custom Python object",
    "class_fqn": "a custom Python object", "custom_obj_name": "a custom Python object",
}


def _declared_symbols(doc: dict) -> frozenset[str]:
    table = doc.get("range_constraints", {})
    if not isinstance(table, dict):
        raise ProgramRefused("its range constraints are not a table")
    for name, bounds in table.items():
        if not SYMBOL_NAME.fullmatch(name):
            raise ProgramRefused(f"it declares the size symbol {quoted(name)}, which is not a plain name like s0")
        if not isinstance(bounds, dict) or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in bounds.values()):
            raise ProgramRefused(f"the range of its size symbol {name} is not two whole numbers")
    return frozenset(table)


def check_program(doc: Any) -> None:
    """Raise ``ProgramRefused`` unless every string in the program JSON ``doc`` is inert."""
    if not isinstance(doc, dict):
        raise ProgramRefused("its program is not a table of fields")
    _Walker(_declared_symbols(doc)).value(doc, None)


class _Walker:
    def __init__(self, symbols: frozenset[str]) -> None:
        self.symbols = symbols

    def value(self, value: Any, field: str | None, depth: int = 0) -> None:
        if depth > 200:
            raise ProgramRefused("its program is nested too deeply")
        if isinstance(value, dict):
            self.table(value, field, depth)
        elif isinstance(value, list):
            for item in value:
                self.value(item, field, depth + 1)
        elif isinstance(value, str):
            self.string(value, field)
        # numbers, booleans and null carry no code

    def table(self, table: dict, field: str | None, depth: int) -> None:
        keys = _KEYED_TABLES.get(field or "")
        if field == "custom_obj_values" and table:
            raise ProgramRefused("it holds custom Python objects")
        for key, item in table.items():
            if keys is not None:
                if not keys.fullmatch(key):
                    raise ProgramRefused(f"it names a value {quoted(key)}, which is not a plain name")
                self.value(item, None, depth + 1)
                continue
            if not IDENTIFIER.fullmatch(key):
                raise ProgramRefused(f"it has a field {quoted(key)} that torch.export does not write")
            if key in _REFUSED_FIELDS:
                raise ProgramRefused(f"it holds {_REFUSED_FIELDS[key]}")
            if key == "guards_code":
                self.guards(item)
            elif key == "metadata":
                self.metadata(item, node=field == "nodes")
            elif key == "target" and field == "nodes":
                check_target(item)
            elif key == "expr_str":
                check_expression(item, self.symbols)
            elif key in ("in_spec", "out_spec"):
                check_tree_spec(item)
            else:
                self.value(item, key, depth + 1)

    def string(self, text: str, field: str | None) -> None:
        rule = _STRING_FIELDS.get(field or "")
        if rule is None:
            raise ProgramRefused(f"it holds the text {quoted(text)} where torch.export writes none")
        pattern, what = rule
        if not pattern.fullmatch(text):
            raise ProgramRefused(f"its {what} {quoted(text)} is not a plain {what}")

    def guards(self, guards: Any) -> None:
        if not isinstance(guards, list):
            raise ProgramRefused("its guards code is not a list")
        for code in guards:
            if not isinstance(code, str) or code.strip():
                raise ProgramRefused(f"it holds guards code {quoted(str(code))}, Python that torch would compile "
                                     "into the module and run on every call")

    def metadata(self, table: Any, node: bool) -> None:
        if not isinstance(table, dict):
            raise ProgramRefused("its metadata is not a table")
        for key, text in table.items():
            if not node or key not in NODE_METADATA:
                raise ProgramRefused(f"it holds the metadata {quoted(str(key))}, which KF Studio does not read")
            check_text(text, key)


def check_text(text: Any, what: str) -> None:
    if not isinstance(text, str) or len(text) > MAX_TEXT or _NOT_TEXT.search(text):
        raise ProgramRefused(f"its {what} holds control characters or is not text")


def check_tree_spec(spec: Any) -> None:
    """``in_spec``/``out_spec``: JSON naming the containers of inputs and outputs."""
    if not isinstance(spec, str) or len(spec) > 1_000_000:
        raise ProgramRefused("its input or output layout is not text")
    try:
        parsed = json.loads(spec)
    except ValueError:
        raise ProgramRefused("its input or output layout is not valid JSON") from None
    if not (isinstance(parsed, list) and len(parsed) == 2 and isinstance(parsed[0], int)):
        raise ProgramRefused("its input or output layout is not one torch.export writes")
    _spec_node(parsed[1], 0)


def _spec_node(node: Any, depth: int) -> None:
    if depth > 64 or not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
        raise ProgramRefused("its input or output layout is not one torch.export writes")
    if node["type"] not in SPEC_TYPES:
        raise ProgramRefused(f"its inputs or outputs are held in {quoted(str(node['type']))}, not in tuples, "
                             "lists or dicts")
    if node["context"] is not None:
        check_text(node["context"], "input or output layout")
    if not isinstance(node["children_spec"], list):
        raise ProgramRefused("its input or output layout is not one torch.export writes")
    for child in node["children_spec"]:
        _spec_node(child, depth + 1)


# ---------------------------------------------------------------- sample inputs

def check_sample_inputs(value: Any, depth: int = 0) -> None:
    """The example inputs torch keeps beside a program: containers of tensors and numbers only.

    torch writes the paths into them (dict keys) into the Python source of the module's guards,
    so a key must be a plain name."""
    import torch

    if depth > 32:
        raise ProgramRefused("its sample inputs are nested too deeply")
    if value is None or isinstance(value, (bool, int, float, torch.Tensor)):
        return
    if isinstance(value, (tuple, list)):
        for item in value:
            check_sample_inputs(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and IDENTIFIER.fullmatch(key)):
                raise ProgramRefused(f"its sample inputs are keyed by {quoted(str(key))}, which is not a plain name")
            check_sample_inputs(item, depth + 1)
    else:
        raise ProgramRefused(f"its sample inputs hold a {type(value).__name__}, not tensors or numbers")
