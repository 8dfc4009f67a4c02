"""Bounding a batch of domains within memory: on an out-of-memory error (or a size cap's
ProblemTooLargeError) the batch is bounded in halves (recursively, down to one domain), so
branch-and-bound slows down instead of crashing. A single domain that does not fit raises
:class:`~lipbound.errors.ProblemTooLargeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import ProblemTooLargeError, is_out_of_memory


def _is_oom(err: BaseException) -> bool:
    return is_out_of_memory(err)


def _take(x: Any, sl: slice) -> Any:
    if isinstance(x, Tensor):
        return x[sl]
    if isinstance(x, (list, tuple)):
        return [_take(t, sl) for t in x]
    return x  # scalars and None are shared by every chunk


def _join(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    return type(first)(_join([p[i] for p in parts]) for i in range(len(first)))


def bound_in_chunks(fn: Callable[..., Any], *args: Any, n: int) -> Any:
    """``fn(*args)`` where every tensor in ``args`` (or in lists of them) has ``n`` rows (other
    arguments are passed to every chunk as they are) and
    the result is a tensor or (nested) tuples / lists of tensors with ``n`` rows; bounded in
    halves when the whole batch runs out of memory."""
    try:
        return fn(*args)
    except ProblemTooLargeError:  # a size cap (e.g. CROWN's chunk cap): halve the batch
        if n <= 1:
            raise
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err):
            raise
        if n <= 1:
            raise ProblemTooLargeError(
                "one branch-and-bound domain does not fit in memory; use a smaller model or "
                "input, or bound on a device with more memory") from err
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    h = n // 2
    return _join([bound_in_chunks(fn, *_take(args, slice(0, h)), n=h),
                  bound_in_chunks(fn, *_take(args, slice(h, n)), n=n - h)])
