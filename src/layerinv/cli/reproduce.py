"""The `layerinv reproduce` and `layerinv report` commands.

`add_parsers(subparsers)` registers both on the main parser's sub-command action; each sets
`run` to a function taking the parsed arguments and returning the exit status (0 done, 1 some
trials raised an error, 130 interrupted: run again to resume).

Ctrl-C: the first stops the run (its workers end at once, every stored trial is counted from
the file, exit 130); later ones are ignored until the command has ended (`first_ctrl_c_stops`).
The report folder is checked before the run (`check_report_folder`): a file is a usage error,
a folder that cannot be written a `ReportError` (a runtime failure), and so is a write that
fails while the report is rendered; each is one line naming the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerinv.errors import InputError, LayerinvError
from layerinv.reproduction import registry


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """The experiment choices are the registry's names when the parser is built (`main`
    builds it on every call), so an experiment added with `registry.register` is one."""
    from layerinv.reproduction.run import DEFAULT_DB, DEFAULT_OUT

    p = subparsers.add_parser(
        "reproduce", help="run the paper's experiments into a results file and report them",
        description="Reproduce Lei et al. (2019): every trial is one row of an SQLite results "
                    "file, written as soon as it finishes; running again skips finished trials "
                    "(Ctrl-C, a killed worker or a lost machine lose nothing). Then writes "
                    "DIR/REPORT.md, DIR/report.html and DIR/figures/.")
    p.add_argument("experiment", nargs="?", default=registry.ALL,
                   choices=(*registry.names(), registry.ALL),
                   help="which experiment (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="a few trials per grid point (about a minute of trials on 2 cores for "
                        "'all'; the full grids: about 1.5 hours on 2 cores)")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="trials per grid point (default: the paper's, 200 for success-vs-k "
                        "and noise; 2-3 with --quick)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (default: every core; 1: in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a Dask scheduler, tcp://HOST:PORT, to run the trials on a cluster")
    p.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                   help=f"the results file (default: {DEFAULT_DB})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"the report folder (default: {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_reproduce)

    r = subparsers.add_parser(
        "report", help="render REPORT.md, report.html and figures from a results file",
        description="Re-render the report of a results file without computing anything.")
    r.add_argument("--db", required=True, metavar="PATH", help="the results file")
    r.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"the report folder (default: {DEFAULT_OUT})")
    r.set_defaults(run=run_report)


def run_reproduce(args: argparse.Namespace) -> int:
    from layerinv.reproduction.run import run_experiments

    if args.trials is not None and args.trials < 1:
        raise InputError(f"--trials must be >= 1; got {args.trials}")
    if args.workers is not None and args.workers < 1 and args.workers != -1:
        raise InputError(f"--workers must be >= 1 (or -1: every core); got {args.workers}")
    if args.scheduler is not None and args.workers is not None:
        print("note: --workers is ignored with --scheduler (the cluster has its own workers)")
    check_report_folder(args.out)  # before the run, not after hours of it
    with first_ctrl_c_stops():
        try:
            result = run_experiments([args.experiment], quick=args.quick, trials=args.trials,
                                     workers=args.workers, scheduler=args.scheduler,
                                     db=args.db, out=args.out,
                                     progress=False if args.no_progress else None)
        except OSError as exc:
            if isinstance(exc, LayerinvError) or not _inside(exc.filename, args.out):
                raise
            raise ReportError(f"{_cannot_write_report(args.out, exc)}; every trial is in "
                              f"{args.db!r}: `layerinv report --db {args.db} --out DIR` "
                              f"renders it again") from None
    return result.exit_code


class ReportError(LayerinvError, OSError):
    """The report folder cannot be written (read-only, no permission, a full disk): a runtime
    failure, not a usage error."""


def check_report_folder(out: str) -> None:
    """Refuse a report folder that is a file (InputError) or cannot be written (ReportError),
    before any work and without creating anything."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out must be a folder for the report; {out!r} is an existing file")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"--out must be a folder for the report; {str(ancestor)!r} in "
                         f"{out!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(ancestor).f_flag & os.ST_RDONLY)
        why = "on a read-only file system" if read_only else "not writable by this user"
        raise ReportError(f"cannot write the report folder {out!r}: {str(ancestor)!r} is "
                          f"{why}; pass --out a folder you can write")


def _inside(filename: object, folder: str) -> bool:
    if not isinstance(filename, (str, os.PathLike)):
        return False
    try:
        return Path(filename).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


def _cannot_write_report(out: str, exc: OSError) -> str:
    return (f"cannot write the report to {out!r} ({exc.strerror or exc}: {exc.filename}): pass "
            f"--out a folder you can write, with free space")


@contextlib.contextmanager
def first_ctrl_c_stops() -> Iterator[None]:
    """The first Ctrl-C raises KeyboardInterrupt (the run stops its workers, counts the stored
    trials and returns 130); later ones are ignored until the command has ended.

    Without this a second Ctrl-C, pressed while the pool stops or while the finished trials
    are counted, cut that short with a KeyboardInterrupt traceback. After an interruption
    SIGINT stays ignored: the command is on its way out, and stopping takes a few seconds at
    most (parallel.STOP_JOIN_S per worker at worst). Outside the main thread, or where a
    handler other than Python's default is installed, nothing is changed.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    interrupted = []

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        if not interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def run_report(args: argparse.Namespace) -> int:
    from layerinv.reproduction.report import render
    from layerinv.reproduction.run import terminal_summary
    from layerinv.reproduction.store import ResultsStore

    check_report_folder(args.out)
    with ResultsStore(args.db, readonly=True) as store:  # a run may be writing it
        try:
            path = render(store, args.out)
        except OSError as exc:
            if isinstance(exc, LayerinvError):
                raise
            raise ReportError(_cannot_write_report(args.out, exc)) from None
        for name in store.experiments():
            try:
                print(terminal_summary(store, name))
            except Exception as exc:  # an experiment this layerinv does not know
                print(f"== {name}: cannot summarise ({exc})")
            print()
    print(f"report: {path} and {path.parent / 'report.html'}")
    return 0
