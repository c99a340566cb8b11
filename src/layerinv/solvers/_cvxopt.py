"""cvxopt's LP solver, the paper authors' choice: the 'cvxopt' backend, a reference.

Needs the optional `cvxopt` package (`pip install layerinv[bench]`).
"""

from __future__ import annotations

import time

import numpy as np

from layerinv._blas import on_one_thread
from layerinv.results import Status
from layerinv.solvers.problem import (
    FunctionBackend,
    LayerProblem,
    LPResult,
    explicit_answer,
    explicit_form,
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
    # cvxopt's LP solver is dense: it takes the band rows as a dense matrix (the operator's
    # dense rows, through explicit_form), as the paper's reference code did.
    form = explicit_form(problem)
    # Inequality form G x <= h: upper ends as they are, lower ends negated, then the bounds.
    finite_hi, finite_lo = np.isfinite(form.row_hi), np.isfinite(form.row_lo)
    blocks = [form.matrix[finite_hi], -form.matrix[finite_lo]]
    rhs = [form.row_hi[finite_hi], -form.row_lo[finite_lo]]
    eye = np.eye(len(form.cost))
    for sign, bound in ((-1.0, form.lower), (1.0, form.upper)):
        keep = np.isfinite(bound)
        blocks.append(sign * eye[keep])
        rhs.append(sign * bound[keep])
    solvers.options["show_progress"] = False
    answer = solvers.lp(cvx_matrix(form.cost), cvx_matrix(np.vstack(blocks)),
                        cvx_matrix(np.concatenate(rhs)))
    status = {"optimal": Status.OPTIMAL, "primal infeasible": Status.INFEASIBLE}.get(
        answer["status"], Status.NUMERICAL_ERROR)
    gap = answer.get("gap")
    return explicit_answer(form, None if answer["x"] is None else np.array(answer["x"]).ravel(),
                           status, solver="cvxopt",
                           iterations=int(answer.get("iterations") or 0), started=started,
                           message=str(answer["status"]),
                           objective_error=np.inf if gap is None else abs(float(gap)))

BACKEND = FunctionBackend(solve_cvxopt)
