"""kan-fast's layer and model: the reference's parameters and function, computed from local bases."""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kan import native
from kan.bspline import KnotGeometry, knot_geometry
from kan.fast.dense import DenseSplineProduct
from kan.fast.gather import GatherSplineProduct
from kan.fast.native_products import NativeDenseProduct, NativeGatherProduct, native_product
from kan.fast.options import BACKENDS, COMPILES, CONTRACTIONS, check_choice, gathers, triton_kernels
from kan.fast.shared import all_finite, transformed
from kan.fast.uniform import CompiledKernels, can_compile, eager
from kan.reference import KAN, KANLinear, check_dtype, check_features, takes_spline_options
from kan.regions import BASE_BRANCH, region


class FastBSplineKANLinear(KANLinear):
    """``KANLinear`` with the same parameters, buffers and function, computed from local bases.

    Construction, ``update_grid``, ``curve2coeff``, ``regularization_loss`` and the
    dense ``b_splines`` are the reference's own; only ``forward`` differs, and it too is
    the reference's on an input with NaN or inf (whose pattern of NaN and inf in outputs
    and gradients the local bases would not reproduce), with no rows, inside a ``torch.func``
    transform (``grad``, ``vmap``, ``jacrev``, ``jvp``, ``hessian``), with forward-mode
    tangents (``torch.autograd.forward_ad``) or under ``torch.export``, at the reference's speed
    (under ``torch.compile`` it runs as it does eagerly: see ``forward``). Three options choose
    how forward computes, and are not part of the state dict:

    * ``backend``: ``"auto"`` (default) the C++ kernels of ``kan.native`` where they are
      available (built, not turned off by ``KAN_NATIVE=0``) and take the input (CPU,
      float32/float64, spline order up to ``native.MAX_ORDER``), else PyTorch;
      ``"native"`` the C++ kernels, or a ValueError saying why they cannot run;
      ``"torch"`` PyTorch (as on CUDA or without a compiler); ``"triton"`` the Triton
      kernels (see ``uses_triton``).
    * ``contraction``: ``"auto"`` (default) dense below the backend's crossover
      (``NATIVE_GATHER_MIN_COEFF``, ``GATHER_MIN_COEFF`` or, for the Triton kernels,
      ``TRITON_GATHER_MIN_COEFF`` coefficients per feature), gather from it on; ``"dense"``
      or ``"gather"`` that contraction at any grid (the Triton kernels contract a grid of
      one interval densely).
    * ``compile`` (the attribute ``compile_mode``; ``compile`` is ``nn.Module``'s method):
      whether the PyTorch paths' uniform-grid kernels go through ``torch.compile``.
      ``"auto"`` (default) where its toolchain is found (a C++ compiler for the CPU,
      Triton for CUDA), ``"on"`` wherever asked, ``"off"`` never. A compile failure is
      said once, in a warning naming this layer, and this layer runs its kernels eagerly
      from then on; other layers keep theirs.
    """

    @takes_spline_options
    def __init__(self, in_features: int, out_features: int, *options, backend: str = "auto",
                 contraction: str = "auto", compile: str = "auto", **named):
        check_choice("backend", backend, BACKENDS)
        check_choice("contraction", contraction, CONTRACTIONS)
        check_choice("compile", compile, COMPILES)
        super().__init__(in_features, out_features, *options, **named)
        self.backend, self.contraction, self.compile_mode = backend, contraction, compile

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, contraction={self.contraction!r}, compile={self.compile_mode!r}"

    def knot_geometry(self) -> KnotGeometry:
        """The grid's analysis, recomputed whenever the grid buffer changes.

        Cached on the buffer's identity, version counter and storage; on the CPU also
        checked against a copy of the knots, so an edit that bypasses the version
        counter (``grid.data.copy_``) cannot leave a stale uniform flag behind.
        """
        grid = self.grid
        key = (grid._version, grid.data_ptr(), grid.dtype, grid.device, tuple(grid.shape), self.spline_order)
        cached = self.__dict__.get("_knot_cache")
        if (
            cached is not None
            and cached[0] is grid
            and cached[1] == key
            and (grid.device.type != "cpu" or torch.equal(cached[2], grid))
        ):
            return cached[3]
        geometry = knot_geometry(grid, self.spline_order)
        self.__dict__["_knot_cache"] = (grid, key, grid.clone(), geometry)
        return geometry

    def uses_native(self, x: torch.Tensor) -> bool:
        """Whether forward on a tensor like ``x`` runs the C++ kernels (see ``backend``)."""
        if self.backend in ("torch", "triton"):
            return False
        if native.supports(x, self.spline_order):
            return True
        if self.backend == "native":
            raise ValueError(f"backend='native' cannot run here: {self._why_not_native(x)}; "
                             "use backend='auto' or 'torch'")
        return False

    def _why_not_native(self, x: torch.Tensor) -> str:
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return f"the C++ kernels take float32 or float64 CPU tensors, not {x.dtype} on {x.device.type}"
        if not native.available():
            return f"the C++ kernels are unavailable ({native.error()})"
        return f"the C++ kernels take spline orders 0 to {native.MAX_ORDER}, not {self.spline_order}"

    def uses_triton(self, x: torch.Tensor, geometry: KnotGeometry | None = None) -> bool:
        """Whether forward on a tensor like ``x`` runs the Triton kernels (``kan.triton_spline``).

        Only ``backend="triton"`` takes them, wherever they can run (CUDA, or CPU tensors
        under ``TRITON_INTERPRET=1``), else a ValueError saying why; ``"auto"`` keeps the
        PyTorch path on CUDA until the kernels' speed has been measured on a GPU. A layer they do not compute (adapted grid, spline order
        outside 1..5, another base activation, a dtype other than float32 and float64) takes the PyTorch path,
        with a warning said once per layer. ``geometry``: this layer's ``knot_geometry()``, where the caller has it.
        """
        if self.backend != "triton":
            return False
        kernels = triton_kernels()
        if kernels is None:
            if self.backend == "triton":
                raise ValueError("backend='triton' cannot run here: Triton is not installed; "
                                 "use backend='auto' or 'torch'")
            return False
        device_reason = kernels.why_not_device(x)
        if device_reason is not None:
            if self.backend == "triton":
                raise ValueError(f"backend='triton' cannot run here: {device_reason}; use backend='auto' or 'torch'")
            return False
        geometry = self.knot_geometry() if geometry is None else geometry
        reason = kernels.why_not_layer(x, self.spline_order, geometry.uniform,
                                       type(self.base_activation) is torch.nn.SiLU, self.out_features, geometry.coeff)
        if reason is None:
            return True
        if not self.__dict__.get("_triton_warned"):
            self.__dict__["_triton_warned"] = True
            warnings.warn(f"kan.fast: this layer takes the PyTorch path, not the Triton kernels: {reason}")
        return False

    def uses_gather(self) -> bool:
        """Whether forward contracts by gathering coefficient rows (large grids) or densely.

        ``contraction`` if it names one; else the crossover of the path this layer's
        tensors take: the Triton kernels with ``backend="triton"``, the C++ kernels on the CPU
        where they build, else the PyTorch paths.
        """
        return self._gathers(self.uses_native(self.grid), triton=self.backend == "triton")

    def _gathers(self, native_kernels: bool, triton: bool = False) -> bool:
        return gathers(self.contraction, self.grid_size, self.spline_order, native_kernels, triton)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out).

        Under ``torch.export`` the reference's operations, which a traced program can hold (the
        fast paths choose by the values of the input and of the knots); under ``torch.compile``
        this layer runs eagerly, one graph break, the rest of the model compiled around it
        (traced, those choices would break its graph many times, at a cost of their own)."""
        check_features(x, self.in_features)
        check_dtype(x, self.spline_weight)
        if _is_exporting():
            return super().forward(x)
        if torch.compiler.is_compiling():
            return _eager_forward()(self, x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """forward, eagerly, after the checks of the input."""
        if x.numel() == 0 or transformed(x, self.parameters(recurse=False)):
            return super().forward(x)  # the reference's operations: its empty batch, and what composes with them
        original_shape = x.shape
        flat = x.reshape(-1, self.in_features)  # (batch, in)
        geometry = self.knot_geometry() if self.backend == "triton" else None
        if self.uses_triton(flat, geometry):  # the kernels give the reference's NaN and inf themselves: no check here
            scaler = self.spline_scaler if self.enable_standalone_scale_spline else None
            output = triton_kernels().layer(flat, self.spline_weight, scaler, self.base_weight, self.grid,
                                            self.spline_order, gather=self._gathers(False, triton=True),
                                            cardinal=geometry.cardinal)
            return output.reshape(*original_shape[:-1], self.out_features)
        native_kernels = self.uses_native(flat)
        if native_kernels and type(self.base_activation) is torch.nn.SiLU:
            # The C++ kernels take any input safely, and with SiLU a NaN or inf input always
            # reaches the output through the base branch (silu of NaN or +-inf is NaN or inf, and
            # NaN or inf times any weight is not finite): checking the output (batch, out) finds
            # what checking the input (batch, in) would, for a fraction of the reading.
            output = self._fast(flat, native_kernels)
            if all_finite(output):
                return output.reshape(*original_shape[:-1], self.out_features)
        elif all_finite(flat):
            return self._fast(flat, native_kernels).reshape(*original_shape[:-1], self.out_features)
        return super().forward(x)  # the reference's operations: its NaN and inf

    def _fast(self, x: torch.Tensor, native_kernels: bool) -> torch.Tensor:
        """x (batch, in), all finite -> (batch, out), by the local bases on the chosen path."""
        geometry = self.knot_geometry()
        gather = self._gathers(native_kernels)
        if native_kernels:
            scaler = self.spline_scaler if self.enable_standalone_scale_spline else None
            product = NativeGatherProduct if gather else NativeDenseProduct
            output = native_product(product, x, self.spline_weight, scaler, self.base_weight, geometry,
                                    self.base_activation)
        elif gather:
            # in the parameters' dtype under autocast too, as every other path and the spline part
            # (autocast left only where it is on: leaving it costs microseconds a call)
            kind = x.device.type
            with region(BASE_BRANCH), (torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind)
                                       else contextlib.nullcontext()):
                base_output = F.linear(self.base_activation(x), self.base_weight)  # (batch, out)
            table = self.scaled_spline_weight.permute(1, 2, 0).contiguous()  # (in, coeff, out)
            output = base_output + GatherSplineProduct.apply(x, table.view(-1, self.out_features), geometry,
                                                             self.kernels(x))
        else:
            weight_t = torch.cat(
                [self.scaled_spline_weight.permute(2, 1, 0), self.base_weight.t().unsqueeze(0)]
            ).reshape(-1, self.out_features)  # ((coeff + 1) * in, out), row c * in + i
            output = DenseSplineProduct.apply(x, weight_t, geometry, self.base_activation, self.kernels(x))
        return output

    def kernels(self, x: torch.Tensor) -> Callable:
        """How this layer runs the PyTorch paths' uniform-grid kernels on a tensor like ``x``:
        ``eager``, or its own ``CompiledKernels`` (see ``compile``)."""
        if self.compile_mode == "off" or (self.compile_mode == "auto" and not can_compile(x.device.type)):
            return eager
        compiled = self.__dict__.get("_compiled_kernels")
        if compiled is None:
            name = f"{type(self).__name__}(in_features={self.in_features}, out_features={self.out_features})"
            compiled = self.__dict__["_compiled_kernels"] = CompiledKernels(name)
        return compiled


# torch.compiler.is_exporting is newer than the oldest torch the project takes; without it, export
# traces what torch.compile does (and fails on the layers)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
_EAGER_FORWARD: list[Callable] = []


def _eager_forward() -> Callable:
    """(layer, x) -> ``layer._forward(x)`` behind ``torch.compiler.disable``: torch.compile calls
    it without tracing it. Made on first need, as the disabling imports dynamo, which takes
    seconds that ``import kan`` should not."""
    if not _EAGER_FORWARD:
        _EAGER_FORWARD.append(torch.compiler.disable(lambda layer, x: layer._forward(x)))
    return _EAGER_FORWARD[0]


class FastBSplineKAN(KAN):
    """``KAN`` built from ``FastBSplineKANLinear`` layers: same options, state dict and seed
    behaviour, plus the layers' ``backend``, ``contraction`` and ``compile`` (see FastBSplineKANLinear)."""

    layer_class = FastBSplineKANLinear

    @takes_spline_options
    def __init__(self, layers_hidden: Sequence[int], *options, backend: str = "auto", contraction: str = "auto",
                 compile: str = "auto", **named):
        check_choice("backend", backend, BACKENDS)
        check_choice("contraction", contraction, CONTRACTIONS)
        check_choice("compile", compile, COMPILES)
        # every layer built with this model's choices (an instance attribute over the class's)
        self.layer_class = functools.partial(FastBSplineKANLinear, backend=backend, contraction=contraction,
                                             compile=compile)
        super().__init__(layers_hidden, *options, **named)
