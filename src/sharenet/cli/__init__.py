"""The `sharenet` command: parses arguments and hands them to the library; errors in one line."""

from __future__ import annotations

import argparse
import sys

from ..engine.stop import Stopped
from ..errors import SharenetError
from ..version import __version__
from . import bench_cmd, deploy_cmd, models_cmd, study_cmd, train_cmd

COMMANDS = (models_cmd, train_cmd, bench_cmd, study_cmd, deploy_cmd)
DESCRIPTION = """\
Parameter-shared residual networks: build ResNets whose 3x3 kernels are shared (ShaResNet's
per-stage sharing, Dai et al.'s intra-block sharing) or learned from shared parts (Savarese &
Maire's template banks, Kang et al.'s filter bases), read from one parameter ring of any size
(RPG), or shared with a low-rank correction per conv (relaxed sharing); meet any parameter budget
(params=), count parameters against the papers', train and evaluate with the papers' recipes,
compress a trained network into a shared one (fitted to the teacher's conv outputs on calibration
images, then distilled from it), run studies of shared against unshared
networks, measure training and inference speed on this machine, export trained models to ONNX or
torch.export with every shared tensor stored once (optionally int8), and classify images.
`sharenet COMMAND --help` for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharenet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"sharenet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except SharenetError as e:
        if args.debug:
            raise
        label = "" if isinstance(e, Stopped) else "error: "  # a requested stop is not an error
        print(f"sharenet: {label}{e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("sharenet: interrupted", file=sys.stderr)
        return 130
