"""cvxopt's LP solver, the paper authors' choice: the 'cvxopt' backend, a reference.

Needs the optional `cvxopt` package (`pip install layerinv[bench]`).
"""

from __future__ import annotations

import time

import numpy as np

from layerinv._blas import on_one_thread
from layerinv.results import Status
from layerinv.solvers.problem import (
    ROUNDOFF,
    FunctionBackend,
    LayerProblem,
    LPResult,
    constraint_rows,
    slack_bounds,
)


@on_one_thread
def solve_cvxopt(problem: LayerProblem) -> LPResult:
    """cvxopt's default LP solver (the paper authors' choice), dense matrices: a reference.

    Needs the optional `cvxopt` package (`pip install layerinv[bench]`).
    """
    try:
        from cvxopt import matrix as cvx_matrix
        from cvxopt import solvers
    except ImportError:
        from layerinv.errors import InputError

        raise InputError("solver='cvxopt' needs the cvxopt package: pip install cvxopt") from None
    started = time.perf_counter()
    m = problem.n_inputs
    # cvxopt's LP solver is dense: it takes the band rows as a dense matrix (the operator's
    # dense rows, through constraint_rows), as the paper's reference code did.
    dense, row_lo, row_hi = constraint_rows(problem)
    floors, t_high = slack_bounds(problem)
    n_t = len(floors)
    # Inequality form G x <= h: upper ends as they are, lower ends negated, then the bounds.
    blocks = [dense[np.isfinite(row_hi)], -dense[np.isfinite(row_lo)]]
    rhs = [row_hi[np.isfinite(row_hi)], -row_lo[np.isfinite(row_lo)]]
    eye = np.eye(m + n_t)
    for sign, bound in ((-1.0, np.concatenate([problem.h_low, floors])),
                        (1.0, np.concatenate([problem.h_high, t_high]))):
        keep = np.isfinite(bound)
        blocks.append(sign * eye[keep])
        rhs.append(sign * bound[keep])
    cost = np.concatenate([np.zeros(m), np.ones(n_t)])
    solvers.options["show_progress"] = False
    answer = solvers.lp(cvx_matrix(cost), cvx_matrix(np.vstack(blocks)),
                        cvx_matrix(np.concatenate(rhs)))
    x = np.zeros(m + n_t) if answer["x"] is None else np.array(answer["x"]).ravel()
    status = {"optimal": Status.OPTIMAL, "primal infeasible": Status.INFEASIBLE}.get(
        answer["status"], Status.NUMERICAL_ERROR)
    objective = float(x[m:].sum())
    gap = answer.get("gap")
    accuracy = (np.inf if gap is None else abs(float(gap))) + ROUNDOFF * (1 + abs(objective))
    return LPResult(h=x[:m], t=x[m:], objective=objective, status=status,
                    solver="cvxopt", iterations=int(answer.get("iterations") or 0),
                    seconds=time.perf_counter() - started, message=str(answer["status"]),
                    accuracy=accuracy)


BACKEND = FunctionBackend(solve_cvxopt)
