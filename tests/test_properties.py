"""Property-based parity with eager PyTorch (hypothesis): random leading shapes, feature counts that reach every CPU
kernel, dtypes, strides, and values both ordinary and extreme (+-1e4, the range where float32's exp overflows,
subnormals, infinities, NaN). The forward and every gradient must match eager within what a different summation
order can change, NaN and infinities must sit where eager's do (or, where eager departs from it, where the float64
result's do), and no call may write to its arguments.

The hypothesis profiles are registered here, the only file that uses hypothesis: "ci" (the default) draws the same
examples on every run; "thorough" draws many more, at random, for runs by hand:
    HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py --hypothesis-show-statistics
"""

import dataclasses
import math
import os

import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import assert_forward_matches_eager
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

settings.register_profile(
    "ci", max_examples=300, derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=1500, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# Feature counts skewed small (most draws are cheap) but spanning every kernel: in_features up to 8 and
# out_features up to 4 have exact-shape loops, out_features up to 8 the direct kernel, from 9 the tiled one (one
# vector wide up to 16 float outputs on AVX-512) until the weight passes half of a core's L2 (kernel_path's labels
# take 512 KiB, 600 x 300 float32), then GEMM.
# 0 (an empty weight) is drawn apart, rarely (see rarely_zero).
IN_FEATURES = st.one_of(st.integers(1, 8), st.integers(9, 80), st.integers(81, 600))
OUT_FEATURES = st.one_of(st.integers(1, 4), st.integers(5, 8), st.integers(9, 31), st.integers(32, 300))
# At most about this many multiply-adds and rows per example, so that a draw takes milliseconds: enough for the
# GEMM path to be cut into blocks (from 2**22 multiply-adds) and for the direct backward to span several of its
# 4096-row chunks.
MAX_MULTIPLY_ADDS = 6 * 2**20
MAX_ROWS = 20_000

INPUT_LAYOUTS = ("contiguous", "transposed", "dims_reversed", "row_padded", "feature_step", "expanded",
                 "features_broadcast")
WEIGHT_LAYOUTS = ("contiguous", "transposed", "row_padded", "feature_step", "expanded")
BIAS_LAYOUTS = ("contiguous", "feature_step", "expanded")

INF, NAN = float("inf"), float("nan")


def kernel_path(leading, in_features, out_features, dtype):
    """The CPU kernel the op picks (csrc/cpu/linear_sigmoid_cpu.cpp), only to label examples, so that
    --hypothesis-show-statistics shows every path drawn."""
    rows = math.prod(leading)
    if rows == 0 or out_features == 0:
        return "empty output"
    exact_shape = 0 < in_features <= 8 and out_features <= 4
    if dtype in (torch.float32, torch.float64):
        if out_features <= 8:
            return "direct, exact shape" if exact_shape else "direct, vectorised"
        if in_features * out_features * dtype.itemsize <= 512 * 1024:
            return "tiled, one vector wide" if dtype == torch.float32 and out_features <= 16 else "tiled"
        split = 16 if rows * in_features * out_features >= 2**22 else 1
        block_rows = max(64, min(512 * 1024 // (out_features * dtype.itemsize), -(-rows // split)))
        return "GEMM in blocks" if rows > block_rows and 2 * block_rows >= in_features else "GEMM, one call"
    if in_features <= 8 and out_features <= 4:
        return "direct, exact shape" if exact_shape else "direct, vectorised"
    return "GEMM, one call"


@dataclasses.dataclass(frozen=True)
class Subnormal:
    """A subnormal of whatever dtype it lands in: its smallest normal number times 2**-exponent."""
    exponent: int
    negative: bool

    def value(self, dtype):
        magnitude = torch.finfo(dtype).smallest_normal * 2.0**-self.exponent
        return -magnitude if self.negative else magnitude


@dataclasses.dataclass(frozen=True)
class Problem:
    dtype: torch.dtype
    leading: tuple
    in_features: int
    out_features: int
    with_bias: bool
    layouts: tuple = ("contiguous", "contiguous", "contiguous")
    input_scale: float = 1.0
    weight_scale: float = 1.0
    seed: int = 0
    # (argument, position as a fraction of its elements, value) written over the random values.
    specials: tuple = ()


EXTREME_VALUES = st.one_of(
    st.sampled_from([1e4, -1e4, INF, -INF, NAN, -0.0]),
    st.floats(88.0, 104.0), st.floats(-104.0, -88.0),
    st.builds(Subnormal, st.integers(1, 7), st.booleans()))


def rarely_zero(draw, sizes):
    """0 about one draw in 30, else a size from sizes: a 0 empties the whole call. Hypothesis draws the bounds of a
    range far more often than the values inside, so the 0 is keyed to a value inside one."""
    return 0 if draw(st.integers(0, 31)) == 16 else draw(sizes)


@st.composite
def leading_shapes(draw, max_rows):
    """0 to 4 leading dims whose product stays within max_rows."""
    shape = []
    remaining = max_rows
    for _ in range(draw(st.integers(0, 4))):
        size = rarely_zero(draw, st.integers(1, max(1, min(remaining, 80))))
        shape.append(size)
        remaining = max(1, remaining // max(size, 1))
    return tuple(shape)


@st.composite
def problems(draw, extreme):
    dtype = draw(st.sampled_from(DTYPES))
    in_features, out_features = rarely_zero(draw, IN_FEATURES), rarely_zero(draw, OUT_FEATURES)
    leading = draw(leading_shapes(min(MAX_ROWS, MAX_MULTIPLY_ADDS // ((in_features + 1) * (out_features + 1)))))
    event(kernel_path(leading, in_features, out_features, dtype))
    specials = ()
    if extreme:
        specials = tuple(draw(st.lists(
            st.tuples(st.sampled_from(["input", "weight", "bias", "grad_output"]), st.floats(0, 1, exclude_max=True),
                      EXTREME_VALUES), min_size=1, max_size=8)))
    return Problem(
        dtype=dtype, leading=leading, in_features=in_features, out_features=out_features,
        with_bias=draw(st.booleans()),
        layouts=(draw(st.sampled_from(INPUT_LAYOUTS)), draw(st.sampled_from(WEIGHT_LAYOUTS)),
                 draw(st.sampled_from(BIAS_LAYOUTS))),
        input_scale=draw(st.sampled_from([1.0, 0.01, 10.0] + ([1e4] if extreme else []))),
        # nn.Linear's scale keeps large layers out of saturation; 1.0 drives them into it.
        weight_scale=draw(st.sampled_from([1.0 / math.sqrt(max(in_features, 1)), 1.0])),
        seed=draw(st.integers(0, 2**16)),
        specials=specials)


def arranged(values, layout):
    """values laid out in memory as named; "expanded" and "features_broadcast" keep one slice of them (stride 0).
    Padding around the elements is NaN, so a kernel that reads outside the view poisons its result."""
    if layout == "transposed" and values.dim() >= 2:
        return values.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "dims_reversed":
        order = tuple(reversed(range(values.dim())))
        return values.permute(order).contiguous().permute(order)
    if layout == "row_padded":
        buffer = values.new_full((*values.shape[:-1], values.shape[-1] + 3), NAN)
        buffer[..., 1:-2] = values
        return buffer[..., 1:-2]
    if layout == "feature_step":
        buffer = values.new_full((*values.shape[:-1], 2 * values.shape[-1]), NAN)
        buffer[..., ::2] = values
        return buffer[..., ::2]
    if layout == "expanded" and values.shape[0] > 0:
        return values.narrow(0, 0, 1).expand(values.shape)
    if layout == "features_broadcast" and values.shape[-1] > 0:
        return values.narrow(-1, 0, 1).expand(values.shape)
    return values


def build(problem):
    """(input, weight, bias or None, grad_output, grad_output with the extreme values that target it)."""
    generator = torch.Generator().manual_seed(problem.seed)
    dtype = problem.dtype
    shapes = {"input": (*problem.leading, problem.in_features),
              "weight": (problem.out_features, problem.in_features),
              "bias": (problem.out_features,),
              "grad_output": (*problem.leading, problem.out_features)}
    scales = {"input": problem.input_scale, "weight": problem.weight_scale, "bias": 1.0, "grad_output": 1.0}
    values = {name: torch.randn(shape, generator=generator, dtype=torch.float64) * scales[name]
              for name, shape in shapes.items()}
    special_grad_output = values["grad_output"].clone()
    for name, position, value in problem.specials:
        target = special_grad_output if name == "grad_output" else values[name]
        if target.numel() > 0:
            number = value.value(dtype) if isinstance(value, Subnormal) else value
            target.view(-1)[int(position * target.numel())] = number
    x = arranged(values["input"].to(dtype), problem.layouts[0])
    w = arranged(values["weight"].to(dtype), problem.layouts[1])
    b = arranged(values["bias"].to(dtype), problem.layouts[2]) if problem.with_bias else None
    return x, w, b, values["grad_output"].to(dtype), special_grad_output.to(dtype)


def storage_bytes(tensor):
    """A copy of every byte of the tensor's storage, padding outside the view included."""
    return torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage()).clone()


def as_rows(tensor, rows):
    """(rows, last dim) view; the row count spelled out, since reshape cannot infer it when a dim is 0."""
    return tensor.reshape(rows, tensor.shape[-1])


def eager_sigmoid(z, dtype):
    """Eager torch.sigmoid of float64 pre-activations z as the op would see them in dtype (the half types apply it
    in float). Padded to whole vectors: eager's scalar tail uses std::exp, whose overflow point differs from the
    vectorised exp's by an ulp, and the op only ever runs the vectorised one."""
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    flat = z.reshape(-1).to(opmath)
    padded = torch.cat([flat, flat.new_zeros(-flat.numel() % 64)])
    return torch.sigmoid(padded)[:flat.numel()].to(dtype).reshape(z.shape)


def rounding_units(dtype):
    """The relative rounding unit, and the smallest normal number: kernels may read subnormal operands as zero and
    flush subnormal results to zero (oneDNN's bfloat16 GEMM, which both eager and the op's GEMM path run, does
    both), so a product a * b may be off by the smallest normal times |b| (a flushed) or |a| (b flushed), and any
    result by the smallest normal itself; float32's exp overflows before sigmoid's result becomes subnormal."""
    info = torch.finfo(dtype)
    return info.eps, info.smallest_normal


def non_finite_kind(tensor):
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    kind = torch.zeros(tensor.shape, dtype=torch.int8)
    kind[tensor.isnan()] = 1
    kind[tensor == INF] = 2
    kind[tensor == -INF] = 3
    return kind


def assert_non_finite_as_eager(ours, eager, exact, what):
    """NaN and infinities where eager has them, element by element, or else where the float64 result has them:
    eager's bfloat16 GEMM treats subnormal inputs as zero on some shapes (a subnormal times inf gives it NaN where
    the float64 result is inf), and the op need not copy that. Where both have NaN from inf * 0, so must the op."""
    kind = non_finite_kind(ours)
    agrees = (kind == non_finite_kind(eager)) | (kind == non_finite_kind(exact))
    assert bool(agrees.all()), f"{what}: non-finite values differ from eager's at {(~agrees).nonzero()[0].tolist()}"


def assert_within(ours, eager, exact, bound, what):
    """Where ours is finite: within bound of the float64 result, or within twice eager's own error there (where
    eager itself rounds a tiny exact value to 0, say)."""
    error = (ours.double() - exact).abs()
    eager_error = (eager.double() - exact).abs()
    failed = ours.isfinite() & ~(error <= bound) & ~(eager.isfinite() & (error <= 2 * eager_error))
    assert not failed.any(), (
        f"{what}: error {error[failed].max().item():.3g} beyond the bound {bound[failed].max().item():.3g} "
        f"at {failed.nonzero()[0].tolist()}")


def assert_forward_matches_eager_with_extremes(out, x, w, b):
    """The forward rule for any values. The op's pre-activation z differs from the exact one by at most
    z_error = 2 (sqrt(K + 1) + 1) eps sum_k |x_k w_k| (the dot-product bound of conftest, doubled so that float64's
    own reference rounding is covered), so its output lies between sigmoid(z - z_error) and sigmoid(z + z_error),
    give or take the sigmoid's own rounding (a few ulps of the output). Where both ends saturate to exactly 0 or 1
    in the op's dtype, as eager's sigmoid rounds them, the output must be exactly that."""
    eager = reference_linear_sigmoid(x, w, b)
    assert out.shape == eager.shape and out.dtype == eager.dtype
    x64, w64 = x.double(), w.double()
    b64 = None if b is None else b.double()
    z = torch.nn.functional.linear(x64, w64, b64)
    magnitude = x64.abs() @ w64.abs().t() + (0 if b64 is None else b64.abs())
    eps, underflow = rounding_units(out.dtype)
    flushed = x64.abs().sum(-1, keepdim=True) + w64.abs().sum(1) + x.shape[-1] + 2
    # An infinite magnitude means an infinite (or NaN) z: then the output is exactly 0 or 1 (or NaN), no slack.
    z_error = (2 * ((x.shape[-1] + 1) ** 0.5 + 1) * eps * magnitude + underflow * flushed).nan_to_num(posinf=0.0)
    exact = torch.sigmoid(z)
    assert_non_finite_as_eager(out, eager, exact, "forward")
    bound = torch.sigmoid(z + z_error) - torch.sigmoid(z - z_error) + 4 * eps * exact + 2 * underflow
    assert_within(out, eager, exact, bound, "forward")
    low, high = eager_sigmoid(z - z_error, out.dtype), eager_sigmoid(z + z_error, out.dtype)
    saturated = (low == high) & ((low == 0) | (low == 1)) & ~eager.isnan()
    assert torch.equal(out[saturated], low[saturated]), "forward: not saturated where eager saturates"


def assert_gradients_match_eager(ours, eager, x, w, b, grad_output, used_output, what):
    """Each gradient is a sum of products of dz = dy * y * (1 - y) with x, w or 1. Against the float64 gradient,
    ours may differ by the dot-product bound of that sum (doubled, as in the forward rule, with two more roundings
    for dz itself) plus what the error of the output it used carries over: |d dz / d y| <= |dy|, so an output
    off by e moves the gradient by at most |dy| e times the other factor."""
    leaves = [t.detach().double().requires_grad_() for t in (x, w)] + ([] if b is None else
                                                                        [b.detach().double().requires_grad_()])
    exact_out = reference_linear_sigmoid(*leaves)
    exact = torch.autograd.grad(exact_out, leaves, grad_output.double())
    out_features = w.shape[0]
    rows = x.shape[:-1].numel()
    dy = as_rows(grad_output.double(), rows).abs()
    y = as_rows(exact_out.detach(), rows)
    dz = dy * y * (1 - y)
    carried = dy * (as_rows(used_output.double(), rows) - y).abs()
    x_rows, w_abs = as_rows(x.double(), rows).abs(), w.double().abs()
    eps, underflow = rounding_units(x.dtype)
    # Per gradient: the magnitude of its sum, the error carried from the output, the number of terms, and the sum
    # of its factors' magnitudes (what flushed subnormals can cost, see rounding_units).
    sums = [(dz @ w_abs, carried @ w_abs, out_features, torch.ones_like(dz) @ w_abs + dz.sum(1, keepdim=True)),
            (dz.t() @ x_rows, carried.t() @ x_rows, rows, torch.ones_like(dz).t() @ x_rows + dz.sum(0)[:, None]),
            (dz.sum(0), carried.sum(0), rows, dz.sum(0))]
    for name, mine, theirs, reference, (magnitude, carried_error, terms, factors) in zip(
            ("grad_input", "grad_weight", "grad_bias"), ours, eager, exact, sums):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype, f"{what} {name}"
        assert_non_finite_as_eager(mine, theirs, reference, f"{what} {name}")
        bound = (2 * ((terms + 1) ** 0.5 + 2) * eps * magnitude + carried_error
                 + underflow * (factors + terms + 3))
        assert_within(mine, theirs, reference.double(), bound.reshape(reference.shape), f"{what} {name}")


def check_against_eager(problem, extreme):
    x, w, b, grad_output, special_grad_output = build(problem)
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    with_bias = b is not None
    arguments = (x, w, b, grad_output, special_grad_output)
    before = [storage_bytes(t) for t in arguments if t is not None]

    out = linear_sigmoid(x, w, b)
    eager_out = reference_linear_sigmoid(x, w, b)
    if extreme:
        assert_forward_matches_eager_with_extremes(out.detach(), x.detach(), w.detach(), None if b is None else
                                                   b.detach())
    else:
        assert_forward_matches_eager(out.detach(), x.detach(), w.detach(), None if b is None else b.detach())

    # Through the op's autograd, each side with its own output.
    ours = torch.autograd.grad(out, leaves, grad_output)
    eager = torch.autograd.grad(eager_out, leaves, grad_output, retain_graph=True)
    assert_gradients_match_eager(ours, eager, x, w, b, grad_output, out, "autograd")

    # The backward op fed eager's own output, with extreme values in grad_output too: the op's arithmetic alone.
    op_grads = torch.ops.fused_sigmoid.linear_sigmoid_backward(
        special_grad_output, eager_out.detach(), x.detach(), w.detach(), [True, True, with_bias])
    eager_grads = torch.autograd.grad(eager_out, leaves, special_grad_output)
    assert_gradients_match_eager(op_grads[:len(leaves)], eager_grads, x, w, b, special_grad_output, eager_out,
                                 "backward op")

    after = [storage_bytes(t) for t in arguments if t is not None]
    for index, (old, new) in enumerate(zip(before, after)):
        assert torch.equal(old, new), f"argument {index} was written to"


PATH_EXAMPLES = [
    Problem(torch.float32, (5,), 3, 2, True),                      # direct, exact shape
    Problem(torch.bfloat16, (2, 3), 8, 4, True, ("row_padded", "transposed", "feature_step")),
    Problem(torch.float64, (9000,), 3, 2, True, ("row_padded", "contiguous", "contiguous")),  # 3 backward chunks
    Problem(torch.float32, (7, 5), 30, 8, False, ("dims_reversed", "contiguous", "contiguous")),  # vectorised
    Problem(torch.float32, (33,), 64, 64, True, ("contiguous", "transposed", "expanded")),       # tiled
    Problem(torch.float64, (4, 9), 100, 40, True, ("expanded", "row_padded", "contiguous")),     # tiled
    Problem(torch.float32, (10,), 16, 12, True),                   # tiled, one vector wide (AVX-512)
    Problem(torch.float64, (3000,), 64, 24, True),                 # tiled, padded columns
    Problem(torch.float32, (10,), 400, 400, True),                 # GEMM, one call
    Problem(torch.float64, (100,), 128, 1100, True),               # GEMM in blocks
    Problem(torch.float32, (4, 7), 600, 300, True, ("contiguous", "feature_step", "contiguous")),  # large weight
    Problem(torch.bfloat16, (50,), 20, 12, False),                 # half type on GEMM
    Problem(torch.float32, (0, 3), 5, 2, True),                    # empty batch
    Problem(torch.float32, (), 0, 3, True),                        # no features: sigmoid(bias)
    Problem(torch.float64, (4,), 5, 0, True),                      # no outputs
    # Saturated outputs: the gradients are sums of subnormal products, whose rounding is absolute, and in bfloat16
    # oneDNN (the GEMM path's backward, two outputs here) flushes a subnormal grad_input to 0 where eager's, from its
    # own output, is a normal number; one output takes the direct backward, reading the rows in place.
    Problem(torch.float32, (60,), 264, 2, False, input_scale=10.0, seed=1),
    Problem(torch.bfloat16, (5, 9, 2), 81, 2, True, ("transposed", "contiguous", "contiguous"), input_scale=10.0),
    Problem(torch.bfloat16, (5, 9, 2), 81, 1, True, ("transposed", "contiguous", "contiguous"), input_scale=10.0),
]


def with_examples(examples):
    def decorate(test):
        for problem in reversed(examples):
            test = example(problem=problem)(test)
        return test
    return decorate


@with_examples(PATH_EXAMPLES)
@given(problem=problems(extreme=False))
def test_matches_eager_on_ordinary_values(problem):
    check_against_eager(problem, extreme=False)


EXTREME_EXAMPLES = [
    dataclasses.replace(PATH_EXAMPLES[0], specials=(("input", 0.0, INF), ("input", 0.5, -INF), ("weight", 0.2, NAN))),
    dataclasses.replace(PATH_EXAMPLES[4], specials=(("input", 0.3, 95.0), ("bias", 0.1, -INF),
                                                    ("grad_output", 0.7, INF))),
    dataclasses.replace(PATH_EXAMPLES[7], input_scale=1e4, specials=(("weight", 0.5, Subnormal(3, True)),)),
    dataclasses.replace(PATH_EXAMPLES[9], specials=(("input", 0.9, -1e4), ("weight", 0.0, INF))),
    # A subnormal times inf: eager's bfloat16 GEMM gives NaN at these sizes (it reads subnormals as zero). The op's
    # exact-shape loop (1 -> 2) gives the float64 result, sigmoid(inf) = 1; its GEMM path (1 -> 5) eager's NaN.
    Problem(torch.bfloat16, (31, 67), 1, 2, False, specials=(("weight", 0, INF), ("input", 0, Subnormal(1, False)))),
    Problem(torch.bfloat16, (11, 75), 1, 5, False, specials=(("weight", 0, INF), ("input", 0, Subnormal(1, False)))),
    Problem(torch.bfloat16, (24, 1), 1, 2, True, ("contiguous", "contiguous", "expanded"),
            specials=(("bias", 0.0, -88.0),)),
    # A subnormal dz (the op's output is 1e-38 here, eager's a normal 1.6e-38) read as zero by oneDNN's bfloat16
    # GEMM, then multiplied by a weight of 88: grad_input is off by about 88 times the smallest normal.
    Problem(torch.bfloat16, (11, 34, 3), 1, 5, True, ("contiguous", "contiguous", "expanded"), seed=1,
            specials=(("weight", 0.0, 88.0), ("bias", 0.0, 88.0))),
]


@with_examples(EXTREME_EXAMPLES)
@given(problem=problems(extreme=True))
def test_matches_eager_on_extreme_values(problem):
    check_against_eager(problem, extreme=True)

