"""HiGHS (highspy): the 'highs' backend, and the one place layerinv builds and runs HiGHS models.

`new_highs` (a silent Highs), `model` (a HighsLp from arrays and a CSC matrix), `loaded` (a
Highs with options set and the model passed), `run` (its solve, which Ctrl-C stops),
`status_of` (HiGHS's model status in layerinv's vocabulary), `set_start` and `column_values`
serve the backend here and exact.py's MILPs and LPs alike: highspy is imported nowhere else.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from layerinv._blas import on_one_thread
from layerinv.results import Status
from layerinv.solvers.problem import (
    FunctionBackend,
    LayerProblem,
    LPResult,
    explicit_answer,
    explicit_form,
)

if TYPE_CHECKING:
    import highspy

_BANNER_LOCK = threading.Lock()
_banner_shown = False


def new_highs() -> highspy.Highs:
    """A silent highspy.Highs.

    The first Highs of a process prints a copyright banner on the C stdout before any option
    can be set; it would land in the middle of the command line's output, so that one
    construction runs with file descriptor 1 pointed at /dev/null.
    """
    import highspy

    global _banner_shown
    with _BANNER_LOCK:
        if _banner_shown:
            highs = highspy.Highs()
        else:
            sys.stdout.flush()
            saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            try:
                highs = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(devnull)
            _banner_shown = True
    highs.setOptionValue("output_flag", False)
    return highs




def model(cost: np.ndarray, col_lower: np.ndarray, col_upper: np.ndarray,
          matrix: sp.csc_matrix | sp.csc_array, row_lower: np.ndarray, row_upper: np.ndarray,
          integer: np.ndarray | None = None) -> highspy.HighsLp:
    """min cost'x s.t. row_lower <= matrix x <= row_upper, col_lower <= x <= col_upper.

    `matrix` is column-wise with sorted indices (HiGHS's kColwise); `integer` flags the
    integer columns (none: an LP).
    """
    import highspy

    n_rows, n_cols = matrix.shape
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_cols, n_rows
    lp.col_cost_ = cost
    lp.col_lower_ = col_lower
    lp.col_upper_ = col_upper
    lp.row_lower_ = row_lower
    lp.row_upper_ = row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data.astype(np.float64)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_cols, n_rows
    if integer is not None and integer.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if flag
                           else highspy.HighsVarType.kContinuous for flag in integer]
    return lp


def loaded(lp: highspy.HighsLp, **options: Any) -> highspy.Highs:
    """A silent Highs with `options` set (in the order given) and `lp` passed, not yet run."""
    highs = new_highs()
    for name, value in options.items():
        highs.setOptionValue(name, value)
    highs.passModel(lp)
    return highs


def run(highs: highspy.Highs) -> None:
    """`highs.run()`, which Ctrl-C stops (then KeyboardInterrupt, as anywhere else).

    HiGHS's C++ run holds the main thread until it returns, and Python raises
    KeyboardInterrupt only between its own instructions: Ctrl-C in a MILP waited for the
    whole solve (measured: SIGINT 8 s into `exact.closest` on a random 30 x 120 x 200 net, still
    running at 300 s). Here, for the run, SIGINT only sets a flag (a Python handler, which the
    interpreter runs in the main thread the next time HiGHS calls back into Python), and
    highspy's interrupt callbacks, called at every simplex and interior-point iteration and
    branch-and-bound node, ask HiGHS to stop once it is set; after the run the interrupt is
    raised. Measured on that MILP: stopped 0.1-6 s after the SIGINT (callbacks are rarer in
    some phases of branch and bound), no cost on MILP times (0.98x). Running HiGHS in a worker
    thread and cancelling it instead aborted the process at exit after 1 of 13 interrupts
    ('terminate called without an active exception', HiGHS's threads). Where SIGINT is not
    Python's default (a worker process that ignores it, a handler of the caller's) or off the
    main thread, HiGHS runs as it is. The layer LP backend (`solve_highs`) runs HiGHS directly:
    its LPs are short, and Ctrl-C lands between them.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        highs.run()
        return
    asked: list[int] = []

    def note(signum: int, frame: object) -> None:
        asked.append(signum)

    def stop_if_asked(event: Any) -> None:
        if asked:
            event.interrupt()

    callbacks = (highs.cbSimplexInterrupt, highs.cbIpmInterrupt, highs.cbMipInterrupt)
    previous = signal.signal(signal.SIGINT, note)
    try:
        for callback in callbacks:
            callback.subscribe(stop_if_asked)
        highs.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        for callback in callbacks:  # unsubscribing one never subscribed is a no-op
            callback.unsubscribe(stop_if_asked)
    if asked:
        raise KeyboardInterrupt


def status_of(model_status: highspy.HighsModelStatus, *, mip: bool = False) -> Status:
    """HiGHS's model status in layerinv's words; every status not named is NUMERICAL_ERROR.

    mip=True reads a MILP whose objective is bounded below, as exact.py builds them: a
    solution limit is the first feasible point asked for (OPTIMAL), 'unbounded or infeasible'
    can only be infeasible, and an empty model is trivially optimal.
    """
    import highspy

    kinds = highspy.HighsModelStatus
    names = {
        kinds.kOptimal: Status.OPTIMAL,
        kinds.kInfeasible: Status.INFEASIBLE,
        kinds.kIterationLimit: Status.MAX_STEPS,
        kinds.kTimeLimit: Status.MAX_STEPS,
    }
    if mip:
        names.update({
            kinds.kSolutionLimit: Status.OPTIMAL,
            kinds.kUnboundedOrInfeasible: Status.INFEASIBLE,
            kinds.kModelEmpty: Status.OPTIMAL,
        })
    return names.get(model_status, Status.NUMERICAL_ERROR)


def set_start(highs: highspy.Highs, values: np.ndarray) -> None:
    """Hand HiGHS a starting point (a MIP start: its incumbent if feasible)."""
    import highspy

    solution = highspy.HighsSolution()
    solution.col_value = list(values)
    solution.value_valid = True
    highs.setSolution(solution)


def column_values(highs: highspy.Highs) -> np.ndarray:
    """The solution's column values (empty when HiGHS has none)."""
    return np.asarray(highs.getSolution().col_value, dtype=np.float64)


@on_one_thread
def solve_highs(problem: LayerProblem) -> LPResult:
    """Dual simplex in HiGHS (presolve off: measured faster on these dense layers)."""
    started = time.perf_counter()
    # Sparse rows from the operator: HiGHS stores its matrix column-wise and sparse anyway,
    # and a structured operator (a convolution) never becomes dense on the way.
    form = explicit_form(problem, sparse=True)
    lp = model(form.cost, form.lower, form.upper, form.matrix, form.row_lo, form.row_hi)
    highs = loaded(lp, presolve="off", solver="simplex",
                   simplex_strategy=1)  # dual simplex
    highs.run()
    model_status = highs.getModelStatus()
    x = column_values(highs)
    info = highs.getInfo()
    # A simplex point infeasible by up to HiGHS's tolerance is optimal for a slightly relaxed
    # LP, whose optimum is below the true one: only dual infeasibility and round-off can put
    # the objective above it.
    size = float(np.abs(x).sum()) if len(x) == len(form.cost) else 0.0
    return explicit_answer(form, x, status_of(model_status), solver="highs",
                           iterations=int(info.simplex_iteration_count), started=started,
                           message=highs.modelStatusToString(model_status),
                           objective_error=2 * float(info.max_dual_infeasibility) * (1 + size))

BACKEND = FunctionBackend(solve_highs)
