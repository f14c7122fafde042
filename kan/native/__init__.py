"""Build, check, load and call the fast KAN's CPU kernels (``kan/_native.cpp``).

The package in parts: ``build`` (compiler, cache folder and its checks, build lock),
``library`` (check, load, bind and self-test the built library), ``schema`` (the kernels'
signatures and per-call checks), ``operators`` (the operators and the functions ``kan.fast``
calls), ``selftest``, and ``cli`` (``python -m kan.native``). The names below are the ones callers use.

The kernels are plain C++ with OpenMP and no PyTorch headers: they take data
pointers, so one ``g++`` call builds them (every spline order from 0 to MAX_ORDER,
float and double), without PyTorch's headers, whose parsing lengthens the build, and
without a tie to the installed torch's C++ ABI, so that a torch upgrade needs no rebuild. They are built on first use, or ahead of it by
``python -m kan.native build``, into a cache folder (``$KAN_NATIVE_CACHE``, else
``$XDG_CACHE_HOME/kan-harness`` or ``~/.cache/kan-harness``), one file per source,
compiler, flags and CPU, with its sha256 beside it. They are loaded with ``ctypes``
after ``torch``, so they share the OpenMP runtime that ``torch`` loaded and its thread
pool. ``python -m kan.native status`` says where the library is and whether it is
current and sound.

Before a cached library is loaded (``dlopen`` runs its constructors), the cache folder
(resolved once) must belong to this user and be writable by nobody else, every folder
above it must belong to this user or root and be writable by nobody else unless sticky,
and the file must be ours and match its recorded checksum. These checks are made on
descriptors opened one folder at a time without following links, and the library is
loaded from the very descriptor whose bytes were hashed (``/proc/self/fd/N``), so no path
is resolved twice. After loading, a self-test compares every kernel with the PyTorch
formulas on a small input, in a clean state (no autocast, dispatch or torch-function
modes, no torch.func transform, grad mode on, float32 default): a library that fails it in
a fresh process as well is removed and rebuilt once; one that fails only in this process is
kept. A build lock
(``flock`` on a file in the cache folder) makes processes that start together build once.
A folder that is not safe is refused with a warning, and the library is built into a
fresh private temporary folder instead. A build that outlasts
``$KAN_NATIVE_BUILD_TIMEOUT`` seconds (default 300, at most a day) is stopped, its whole
process group killed. Whenever the kernels
cannot be used, one warning says why and callers take the PyTorch paths in ``kan.fast``,
which compute the same function. ``KAN_NATIVE=0``, read once at import, turns them off.
docs/native-kernels.md tells the whole of it.
``KAN_NATIVE_SANITIZE=1`` builds them with AddressSanitizer and UBSan (a separate cache
entry; run Python with the ASan runtime preloaded, as ``tests/sanitize.sh`` does).

Each kernel is a PyTorch operator ``kan_native::<kernel>``, declared once in
:data:`KERNELS`: the C parameters in order, from which both the ``ctypes`` argument
types and the operator's schema are derived. Pointers become tensors (``const`` ones
inputs, the others written in place), sizes and strides are derived from the tensors'
shapes, and every call checks dtypes, shapes and contiguity before a pointer reaches
C++, so a wrong call is a ``ValueError``, not corrupted memory. The operators write
into tensors their callers allocate (the dense path reuses one cache-sized buffer, the
weight scaling writes into strided views), so they are out-style and have no autograd
formula of their own: gradients come from the layers' ``autograd.Function``s in
``kan.fast``, whose backward passes combine several kernels (the spline weight and
scaler gradients straight from the gather sums) in ways no per-kernel formula gives.
They are defined with ``torch.library.Library`` rather than ``torch.library.custom_op``,
whose Python autograd and mutation wrappers cost several times the dispatch itself on
every call (the C++ work of a small layer is of the same order); ``register_fake``
gives each one its shape checks for fake tensors and ``torch.compile``, and
``torch.library.opcheck`` checks them (tests/test_native.py). The Python functions
of ``kan.native.operators`` (re-exported here) allocate the outputs and call the operators by keyword: through the dispatcher
where torch.compile, export or a dispatch mode (fake tensors) may be watching, else
straight into the operator's implementation, the same checks and C call without the
dispatcher's cost per call.
"""

from kan.native.build import (
    BUILD_TIMEOUT,
    FLAGS,
    MAX_BUILD_TIMEOUT,
    SANITIZE_FLAGS,
    SOURCE,
    NativeError,
    Place,
    build_timeout,
    cache_dir,
    compiler,
    flags,
    library_path,
    sanitized,
)
from kan.native.library import ENABLED, available, error, expected, supports, takes
from kan.native.operators import (
    SavedSpans,
    can_save,
    dense_bases,
    gather_forward,
    gather_input_grad,
    gather_table_grad,
    gather_weight_grads,
    local_bases,
    ops,
    scale_spline,
    silu,
    silu_grad,
    spline_grads,
)
from kan.native.schema import KERNELS, MAX_ORDER, Param, schema
from kan.native import library, selftest  # noqa: F401  (reached by name: kan.native.library, ...)
