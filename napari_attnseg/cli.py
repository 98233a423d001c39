"""``attnseg``: the headless command line (predict, refine, evaluate, baselines, finetune, train,
benchmark). Each subcommand lives in ``napari_attnseg/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``, imported only when that subcommand runs.
Errors the user can fix (:class:`~napari_attnseg.errors.AttnsegError`, ``ValueError``,
``OSError``, ``MemoryError``, and bad arguments) print one line to stderr and exit 2; no
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "predict": "Segment a scan (NIfTI, DICOM folder, NRRD) with a model",
    "refine": "Refine probabilities with a dense CRF",
    "evaluate": "Score a segmentation against ground truth",
    "baseline": "Run a traditional baseline (Otsu, region growing, active contours)",
    "finetune": "Fine-tune a model on corrected labels",
    "pseudolabel": "Complete scribbles into dense pseudo-labels (random walker) for training",
    "train": "Train a model from a dataset folder (Decathlon / nnU-Net layout) or pairs",
    "benchmark": "Compare methods on a dataset with confidence intervals",
    "export": "Export a model as ONNX (.onnx) or TorchScript (.pt)",
}


class UsageError(Exception):
    """A bad command line (argparse's complaint), reported in one line like other errors."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints the usage and exits; one line instead
        raise UsageError(f"{message} (see {self.prog} --help)")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _load(name: str):
    return importlib.import_module(f"napari_attnseg.commands.{name}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="attnseg", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if wanted is None or wanted == name:
            try:
                _load(name).add_arguments(p)
            except ModuleNotFoundError as exc:
                if exc.name != f"napari_attnseg.commands.{name}":
                    raise
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        command = next((a for a in argv if a in COMMANDS), "")
        sys.stderr.write(f"attnseg {command}: error: {_one_line(exc)}\n".replace("  ", " "))
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if not args.command:
        parser.print_help()
        return 1
    from .errors import AttnsegError

    try:
        return int(_load(args.command).run(args) or 0)
    except (AttnsegError, ValueError, OSError) as exc:
        sys.stderr.write(f"attnseg {args.command}: error: {_one_line(exc)}\n")
        return 2
    except MemoryError as exc:
        sys.stderr.write(f"attnseg {args.command}: error: not enough memory "
                         f"({_one_line(exc)}); try a smaller input or batch\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"attnseg {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
