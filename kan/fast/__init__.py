"""A fast, exact B-spline KAN: the reference's function, parameters and state dicts.

The package in parts: ``kan.bspline`` (outside it: the knot geometry and local bases),
``options`` (backends, contractions, compilation, crossovers), ``uniform`` (the uniform-grid
kernels and their compilation per layer), ``dense`` and ``gather`` (the PyTorch paths' two
contractions), ``native_products`` (the C++ kernels' products), ``shared`` (non-finite values,
the base branch, row chunks), ``layer`` (the layer and model) and ``flops``. The names below
are the ones callers use.

The reference evaluates every one of the ``grid_size + spline_order`` bases of every
feature by the Cox-de Boor recursion over the whole knot vector. Only
``spline_order + 1`` of them are non-zero at any point, so kan-fast evaluates the
*local* bases instead (``kan.bspline.local_b_splines``):

* find the knot span ``m`` with ``t_m <= x < t_(m+1)`` (the reference's half-open
  intervals): on a uniform grid one ``floor`` corrected against the stored knots, on
  any other grid a vectorised binary search;
* evaluate the ``spline_order + 1`` bases ``m - spline_order .. m`` that live on that
  span: on a cardinal grid (uniform to the dtype's rounding, ``is_cardinal``) by the
  closed-form cardinal recursion in the local coordinate
  ``u = (x - t_m) / (t_(m+1) - t_m)`` of the stored knots, on any other grid by de
  Boor's triangle over the ``2 * spline_order`` knots around the span (the reference's
  formulas, restricted to the bases that are not zero), so that float32 knots, evenly
  spaced only to their rounding, get their own B-splines as in the reference.

Backward passes compute first-order gradients with these kernels; while autograd records
a backward (``create_graph=True``: Hessians, losses on input gradients) they go through
the reference's differentiable operations instead (``differentiable_grads``).

Two contractions turn local bases into outputs, chosen by the number of
coefficients per feature (measured crossovers, ``NATIVE_GATHER_MIN_COEFF`` and
``GATHER_MIN_COEFF``; ``python -m benchmarks.studies.crossover`` measures them; for the
Triton kernels ``TRITON_GATHER_MIN_COEFF``, from a count until measured on a GPU), or
by the layer's ``contraction`` option (``"auto"``, ``"dense"``, ``"gather"``):

* dense (small grids): the layer's combined spline + base product
  ``[bases(x), silu(x)] @ [scaled spline weights; base weights]``, one matrix
  product with ``in * (grid_size + spline_order + 1)`` columns, computed over row
  chunks sized to stay in the CPU's cache so the basis never goes to memory;
* gather (large grids): each input reads only the ``spline_order + 1`` coefficient
  rows its local bases touch; the weight gradient sums, for each coefficient row,
  the samples whose knot span uses it.

Two implementations compute them. On the CPU, for float32 and float64, the C++
kernels of ``kan.native`` (built with the system's C++ compiler on first use):
vectorised local bases that never leave the cache, the dense operand written
straight from vector registers for PyTorch's matrix product, and a gather whose
weight gradient sorts each feature's samples by knot span so that a coefficient
row's sum stays in registers (and writes the spline weight and scaler gradients
from those sums); the default SiLU base activation in C++ as well. Elsewhere (CUDA,
MPS, or no compiler) PyTorch: on a uniform grid one float-only expression per chunk,
fused by ``torch.compile`` where the layer's ``compile`` option and the toolchain allow
(eagerly otherwise), on other grids the
exact local bases scattered; the gather as an ``embedding_bag`` with per-sample weights.
The layer's ``backend`` option chooses: ``"auto"`` (the default) the C++ kernels where
they are available and take the tensor, else PyTorch; ``"native"`` the C++ kernels or an
error saying why they cannot run; ``"triton"`` the Triton kernels of ``kan.triton_spline``
(CUDA; uniform grids, spline orders 1 to 5; see ``docs/triton.md``), or an error saying why
they cannot run; ``"torch"`` PyTorch. ``"auto"`` does not take the Triton kernels yet: they
have been checked for correctness (Triton's interpreter, a compile for sm_90) but not yet
timed on a GPU, and the default waits for that measurement.

All of them run inside custom autograd functions that save the input (and the
combined weights, or the base activation) and recompute the bases in backward,
instead of keeping ``(batch, in, coeff)`` tensors alive; the C++ gather on a uniform
grid saves each input's knot span and local coordinate instead of the input, where
only the weights need gradients.
"""

from kan.bspline import (
    CARDINAL_STEP_SPREAD,
    KnotGeometry,
    is_cardinal,
    is_uniform,
    knot_geometry,
    knot_span,
    local_b_splines,
)
from kan.fast.flops import forward_flops, layer_forward_flops
from kan.fast.layer import FastBSplineKAN, FastBSplineKANLinear
from kan.fast.options import (
    BACKENDS,
    COMPILES,
    CONTRACTIONS,
    GATHER_MIN_COEFF,
    NATIVE_GATHER_MIN_COEFF,
    TRITON_GATHER_MIN_COEFF,
    check_choice,
    gather_min_coeff,
    gathers,
    triton_kernels,
)
from kan.fast.uniform import CompiledKernels, can_compile
from kan.reference import differentiable_grads
