"""The ``probdiff`` command line (DESIGN.md, "Command line contract"), a thin layer over the
Python API. Every failure is one line on stderr and a non-zero exit: 2 for bad input (options,
data, run folders), 130 for Ctrl-C, 1 for an internal error (``PROBDIFF_DEBUG=1`` shows its
traceback)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from probdiff.errors import ProbdiffError

MAIN_HELP = """probdiff {version}: diffusion models and their latent-variable ancestors as
probabilistic programs (Pyro and NumPyro).

commands (each has its own --help):
  probdiff fit MODEL --data DATA --out DIR     fit a model by SVI (or EM / NUTS where offered)
  probdiff report DIR                          summary, diagnostics and figures; writes index.html
  probdiff sample DIR -n N [--sampler S]       draw from a fitted model into DIR/samples/
  probdiff evaluate DIR [--data DATA] [--json] metrics on held-out or other data
  probdiff tutorial --out DIR [--quick]        every chapter on embedded data, one report

built-in models (MODEL), or path/to/file.py:model --guide path/to/file.py:guide|auto:normal:
{models}

built-in data (--data): {data}; or a .npz / .npy / .csv file or a folder of PNGs

options: -h/--help, --version
"""


def main_help() -> str:
    """The main help, from the registries (no family is imported)."""
    from probdiff import __version__
    from probdiff.data import BUILTIN_DATASETS
    from probdiff.models import SAMPLERS, SUMMARIES

    lines = []
    for name, summary in SUMMARIES.items():
        lines.append(f"  {name:6s} {summary}")
        samplers = SAMPLERS.get(name, ())
        if samplers:
            lines.append(f"  {'':6s}   samplers: {', '.join(samplers)} (first: default)")
    return MAIN_HELP.format(
        version=__version__, models="\n".join(lines), data=", ".join(BUILTIN_DATASETS)
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not None, not an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


# what Ctrl-C leaves behind, per command
INTERRUPTED = {
    "fit": "interrupted; the fit keeps its last checkpoint: continue it with probdiff fit MODEL "
    "--out DIR --resume",
    "tutorial": "interrupted; start the tutorial again into a new folder",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (a :class:`ProbdiffError`, not usage text on exit 2)."""

    def error(self, message: str):
        raise ProbdiffError(f"{self.prog}: {message}")


def _int_at_least(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _seed(text: str) -> int:
    from probdiff.seeds import MAX_SEED

    return _int_at_least(0, MAX_SEED)(text)


def _common_fit_arguments(p: argparse.ArgumentParser, family=None) -> None:
    """The options every fit takes; with the ``family`` known, its defaults and choices."""
    from probdiff.data import BUILTIN_DATASETS
    from probdiff.models import SUMMARIES
    from probdiff.svi import MAX_STEPS

    steps = f"default {family.default_steps}" if family else "default: the model's"
    lr = f"default {family.default_lr}" if family else "default: the model's"
    batch = getattr(family, "default_batch_size", None)
    batch = f"default {batch}" if batch else "default: the model's, else the full data"
    inferences = tuple(getattr(family, "inferences", ("svi",))) if family else None
    p.add_argument(
        "model",
        help=f"built-in model ({', '.join(SUMMARIES)}) or path/to/file.py:function with --guide",
    )
    p.add_argument(
        "--data",
        default=None,
        help="built-in data (" + ", ".join(BUILTIN_DATASETS) + "; options as "
        "name:key=value,...) or a .npz/.npy/.csv file or a folder of PNGs",
    )
    p.add_argument("--out", required=True, help="run folder to create (must be new or empty)")
    p.add_argument(
        "--steps",
        type=_int_at_least(0, MAX_STEPS),
        default=None,
        help=f"SVI steps (EM: max iterations; {steps})",
    )
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=None,
        help=f"minibatch size ({batch})",
    )
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate ({lr})")
    p.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clip each gradient entry to [-c, c] (ClippedAdam; default 10)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of the fit")
    p.add_argument(
        "--devices",
        type=_int_at_least(1),
        default=1,
        help="numpyro: split each minibatch over this many JAX devices (data parallel)",
    )
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a .npy file's rows or a PNG folder's images on disk and read them per "
        "minibatch (default: when the data is over 1 GiB as float64)",
    )
    p.add_argument(
        "--data-seed",
        type=_seed,
        default=None,
        help="seed of built-in synthetic data and of the held-out split (default: --seed)",
    )
    p.add_argument(
        "--restarts",
        type=_int_at_least(1, 1000),
        default=1,
        help="fits from different seeds; keep the best",
    )
    p.add_argument(
        "--backend",
        default="pyro",
        choices=("pyro", "numpyro"),
        help="inference library"
        + (f" (this model: {', '.join(family.backends)})" if family is not None else ""),
    )
    p.add_argument("--device", default="cpu", metavar="{cpu,cuda,cuda:N}", help="where to run")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "float64"), help="floating point"
    )
    p.add_argument(
        "--threads",
        type=_int_at_least(1, 1024),
        default=1,
        help="torch intra-op threads (1 is fastest for small models; more for images)",
    )
    p.add_argument(
        "--inference",
        default="svi",
        choices=inferences,
        help="svi, or what the model offers (gmm: em, nuts)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the data")
    p.add_argument(
        "--posterior-samples",
        type=_int_at_least(1, 100_000),
        default=200,
        help="guide draws kept for ArviZ",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_int_at_least(0),
        default=250,
        help="steps between checkpoints (0: only at the end of each restart)",
    )
    p.add_argument(
        "--eval-every",
        type=_int_at_least(0),
        default=None,
        help="steps between held-out ELBO evaluations (default steps/50, at least 10; 0: never)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (settings from its config; "
        "--steps, --lr and --clip-norm may change)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="with --resume of a user's model: run the copy of its code that the run folder keeps",
    )


RESUME_MAY_CHANGE = ("steps", "lr", "clip_norm")


def fit_main(argv: list[str]) -> int:
    from probdiff.family import get_family
    from probdiff.usermodel import UserFamily, is_reference

    head = Parser(add_help=False)
    head.add_argument("model", nargs="?")
    known, _ = head.parse_known_args(argv)
    parser = Parser(
        prog="probdiff fit",
        description="Fit a model by SVI (or EM/NUTS).",
        formatter_class=HelpFormatter,
    )
    family = None
    if known.model and not known.model.startswith("-"):
        family = UserFamily if is_reference(known.model) else get_family(known.model)
    _common_fit_arguments(parser, family)
    common = {a.dest for a in parser._actions}
    if family is not None:
        family.add_arguments(parser)
    args = parser.parse_args(argv)
    from probdiff.fitting import fit, resume_request
    from probdiff.request import FitRequest
    from probdiff.svi import SVISettings

    if args.resume:
        given = {
            a.dest
            for a in parser._actions
            if a.dest in vars(args)
            and a.dest not in ("model", "out", "resume", "quiet", "trust_model_code")
            and getattr(args, a.dest) != parser.get_default(a.dest)
        }
        fixed = sorted(given - set(RESUME_MAY_CHANGE))
        if fixed:
            raise ProbdiffError(
                "--resume takes the run's settings from its config.json; only "
                "--steps, --lr and --clip-norm may change, not "
                + ", ".join("--" + k.replace("_", "-") for k in fixed)
            )
        changes = {k: getattr(args, k) for k in RESUME_MAY_CHANGE if getattr(args, k) is not None}
        req = resume_request(args.out, args.model, changes, progress=not args.quiet)
        run = fit(req, resume=True, trust_model_code=args.trust_model_code)
        if run is not None:  # None: a torchrun process other than the first
            print(f"resumed and finished {run.path}")
        return 0
    if args.data is None:
        raise ProbdiffError("--data is required (a built-in name such as blobs, or a file)")
    if args.trust_model_code:
        raise ProbdiffError("--trust-model-code is for --resume (a new fit runs the file you name)")
    options = {k: v for k, v in vars(args).items() if k not in common}
    settings = SVISettings(
        steps=args.steps if args.steps is not None else family.default_steps,
        lr=args.lr if args.lr is not None else family.default_lr,
        batch_size=args.batch_size if args.batch_size is not None else family.default_batch_size,
        seed=args.seed,
        restarts=args.restarts,
        checkpoint_every=args.checkpoint_every,
        progress=not args.quiet,
        eval_every=args.eval_every,
        **({"clip_norm": args.clip_norm} if args.clip_norm is not None else {}),
    )
    req = FitRequest(
        model=args.model,
        data=args.data,
        out=args.out,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        inference=args.inference,
        test_fraction=args.test_fraction,
        posterior_samples=args.posterior_samples,
        threads=args.threads,
        data_seed=args.data_seed,
        devices=args.devices,
        stream=args.stream,
        settings=settings,
        options=options,
    )
    run = fit(req)
    if run is None:  # a torchrun process other than the first: it trained, it writes nothing
        return 0
    metrics = run.metrics
    shown = {
        k: metrics[k]
        for k in ("elbo", "test_elbo", "log_likelihood", "seconds")
        if isinstance(metrics.get(k), float)
    }
    print(f"wrote {run.path}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return 0


def report_main(argv: list[str]) -> int:
    from probdiff.run import open_run

    p = Parser(prog="probdiff report", description="Summarise a run folder.")
    p.add_argument("dir")
    print(open_run(p.parse_args(argv).dir).report())
    return 0


def sample_main(argv: list[str]) -> int:
    from probdiff.sampling import sample

    p = Parser(
        prog="probdiff sample",
        description="Draw from a fitted model.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("dir")
    p.add_argument("-n", type=_int_at_least(1, 10_000_000), default=16, help="number of samples")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--sampler", default=None, help="sampler, where the model has several")
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="a user's model: run the copy of its code that the run folder keeps",
    )
    args = p.parse_args(argv)
    print(sample(args.dir, args.n, args.seed, args.sampler, args.trust_model_code))
    return 0


def evaluate_main(argv: list[str]) -> int:
    from probdiff.sampling import evaluate

    p = Parser(prog="probdiff evaluate", description="Metrics of a fitted model.")
    p.add_argument("dir")
    p.add_argument(
        "--data", default=None, help="data to evaluate on (default: the run's held-out split)"
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="a user's model: run the copy of its code that the run folder keeps",
    )
    args = p.parse_args(argv)
    metrics = evaluate(args.dir, args.data, args.trust_model_code, progress=not args.quiet)
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        for k, v in sorted(metrics.items()):
            print(f"{k:24s} {v}")
    return 0


def tutorial_main(argv: list[str]) -> int:
    from probdiff.tutorial import tutorial

    p = Parser(
        prog="probdiff tutorial",
        description="Run the whole tutorial on embedded data and write a report.",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="small settings (a few minutes on 2 cores)")
    p.add_argument("--seed", type=_seed, default=0)
    args = p.parse_args(argv)
    print(tutorial(args.out, quick=args.quick, seed=args.seed))
    return 0


COMMANDS = {
    "fit": fit_main,
    "report": report_main,
    "sample": sample_main,
    "evaluate": evaluate_main,
    "tutorial": tutorial_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main_help())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from probdiff import __version__

        print(f"probdiff {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(
            f"probdiff: error: unknown command {argv[0]!r} (choose {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    try:
        return command(argv[1:])
    except ProbdiffError as e:
        print(f"probdiff: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "probdiff: " + INTERRUPTED.get(argv[0], "interrupted; nothing was changed"),
            file=sys.stderr,
        )
        return 130
    except SystemExit:
        raise
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get("PROBDIFF_DEBUG"):
            raise
        print(
            f"probdiff: internal error: {type(e).__name__}: {_one_line(str(e))} "
            "(PROBDIFF_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
